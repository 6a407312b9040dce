"""The conv family's technique modules (generated from nbs/conv/)."""
