"""Node processes for the fault tests: ``node.py`` runs one node, ``control.py`` drives them."""
