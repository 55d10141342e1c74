"""A module whose target attribute is not an App."""

app = object()
