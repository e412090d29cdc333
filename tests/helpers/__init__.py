"""Helpers several test files share (``from tests.helpers.<module> import ...``); no tests here."""
