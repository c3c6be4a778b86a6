"""Agent profiles and how their command lines are built."""
