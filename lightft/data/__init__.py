"""Dataset readers and one LightningDataModule per dataset format (see DESIGN.md §5)."""
