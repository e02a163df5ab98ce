"""Jetbridge's core, which every process builds on. The floors, each importing only from those below it
(``tests/unit/test_layers.py`` checks them):

    streams/  connectors/  mcp_bridge/  infra/  bench/   the processes
    jetbridge/     topics, runtime, kafka, dlq, airlines, ...: builds on schemas/
    schemas/       the event contracts and their codec: from jetbridge, only the ground floor
    ground floor   jetbridge.errors, jetbridge.settings, jetbridge.log: nothing of ours but each other

One exception: ``jetbridge.cli``, the command-line entry point, whose commands start the stack (infra) and the
benchmark (bench).
"""
