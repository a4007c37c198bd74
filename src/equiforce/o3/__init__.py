"""equiforce.o3."""
