"""equiforce.train."""
