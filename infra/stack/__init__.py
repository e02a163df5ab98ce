"""The local stack: everything ``jetbridge up`` starts on this machine, and how it is kept running.

- ``components``: what runs (one spec per instance, the scale, the port plan);
- ``supervisor``: the process that starts the instances as its children and restarts any that dies;
- ``control``: ``up``, ``down`` and ``status`` (Kafka and the registry by their scripts, the rest by the
  supervisor);
- ``state``: the files in ``$JB_HOME/run`` they share;
- ``backends``: where the tests' Kafka and registry come from.
"""

__all__: list[str] = []
