"""Offline training of Osprey: data, the three-stage recipe, runners, metrics, and the shapes world."""
