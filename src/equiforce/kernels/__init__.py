"""equiforce.kernels."""
