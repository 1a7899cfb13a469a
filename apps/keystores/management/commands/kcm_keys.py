"""Platform keys: `kcm_keys init` creates the missing ones in the platform keystore (once, under
a lock); `kcm_keys check` verifies the keystore has what KCM needs and every key exists."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.keystores.base import KeystoreError
from apps.keystores.platform import PURPOSES, platform_key, platform_keys_init
from apps.keystores.registry import PLATFORM_CAPABILITIES, platform_keystore


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["init", "check"])

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "init":
                created = platform_keys_init()
                message = f"created {', '.join(created)}" if created else "all present"
                self.stdout.write(f"Platform keys: {message}.")
                return
            platform_keystore().require(*PLATFORM_CAPABILITIES)
            for purpose in PURPOSES:
                platform_key(purpose)
        except KeystoreError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("Platform keystore and keys: ok.")
