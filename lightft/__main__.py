"""`python -m lightft` == `lightft`."""

from lightft.cli.main import main

main()
