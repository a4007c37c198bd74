"""equiforce.nn."""
