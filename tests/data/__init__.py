"""Tests of equiforce.data: extxyz reading, neighbour lists, datasets, statistics."""
