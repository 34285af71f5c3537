"""Flower's own FedAvg and SecAgg+ rounds, run on Lethe's SuperNodes for comparison."""
