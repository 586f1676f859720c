"""The frontend language: @function programs with gen, select, fork and roles."""
