"""The config: its typed schema (``schema``), composing it (``compose``), checking it
(``checks``) and building objects from it (``instantiate``)."""
