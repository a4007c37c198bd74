"""equiforce.cli."""
