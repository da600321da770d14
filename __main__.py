"""Pulumi entry point: everything happens in ``program.define_stack()``."""

import program

program.define_stack()
