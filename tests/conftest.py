"""The suite uses streamfn's own pytest plugin for its brokers, as a user's suite would."""

pytest_plugins = ["streamfn.testing.pytest_plugin"]
