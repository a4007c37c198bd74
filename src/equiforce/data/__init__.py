"""equiforce.data."""
