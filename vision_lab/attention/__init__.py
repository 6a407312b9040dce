"""The attention family's technique modules (generated from nbs/attention/)."""
