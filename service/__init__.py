"""The composition root: settings, command line and the ``serve`` process."""
