"""equiforce.testing."""
