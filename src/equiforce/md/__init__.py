"""equiforce.md."""
