"""Parallelism applied to a plain model from outside: collectives (native on Ascend, composed on CPU), Ulysses
sequence parallelism and ZeRO sharding. Modeling files never import this package."""
