"""The edges of streamfn that talk to the outside world; each module may import its client."""
