#!/usr/bin/env python
"""The example Django POS's manage.py (``python manage.py sincronizar --continuo``...)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pos_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
