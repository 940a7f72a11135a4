"""Training machinery shared by every task: optimiser/schedule, the base LightningModule, run folders."""
