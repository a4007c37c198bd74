"""equiforce.interop."""
