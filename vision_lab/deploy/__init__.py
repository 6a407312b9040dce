"""The deploy family's technique modules (generated from nbs/deploy/)."""
