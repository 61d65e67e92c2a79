"""Which URLs an endpoint may have (`app.webhooks.urls`): the shape of a URL Corral can POST
to, and the allow-list that keeps an admin key from aiming every replica at the internal
network."""

from __future__ import annotations

import httpx
import pytest

from app.settings import Settings
from app.webhooks.urls import MAX_URL_LENGTH, UnacceptableURL, check, host_allowed


def refusal(url: str, allowed: list[str] | None = None) -> str:
    with pytest.raises(UnacceptableURL) as caught:
        check(url, allowed or [])
    return str(caught.value)


class TestShape:
    @pytest.mark.parametrize(
        "url",
        [
            "https://hooks.example.com/corral",
            "http://hooks.example.com:8080/in?team=search-ui",
            "https://[2001:db8::1]/hook",
            "https://10.0.0.7/hook",
            "HTTPS://Hooks.Example.com/",
        ],
    )
    def test_a_plain_http_or_https_url_is_taken_when_no_list_is_set(self, url: str) -> None:
        check(url, [])

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("ftp://hooks.example.com/", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("hooks.example.com/corral", "http or https"),
            ("https:///corral", "no host"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("https://token@hooks.example.com/", "credentials"),
            ("https://hooks.example.com/#frag", "fragment"),
            ("https://hooks.example.com:0/", "port"),
            ("https://hooks.example.com:99999/", "does not parse"),
            ("https://hooks.example.com:+80/", "does not parse"),
            ("https://[::1/", "does not parse"),
        ],
    )
    def test_a_url_corral_cannot_post_to_is_refused_with_the_reason(
        self, url: str, reason: str
    ) -> None:
        assert reason in refusal(url)

    def test_a_url_past_the_limit_is_refused_before_it_is_parsed(self) -> None:
        url = "https://hooks.example.com/" + "a" * MAX_URL_LENGTH
        assert str(MAX_URL_LENGTH) in refusal(url)
        check("https://hooks.example.com/" + "a" * (MAX_URL_LENGTH - 26), [])

    @pytest.mark.parametrize(
        "url",
        [
            " https://hooks.example.com/",
            "https://hooks.example.com/ ",
            "https://hooks.exa mple.com/",
            "https://hooks.exam\tple.com/",
            "https://hooks.example.com/\n",
            "https://hooks.example.com/\r\nX-Injected: 1",
            "https://hooks.example.com/\x7f",
            "https://hooks.example.com/\x1b",
        ],
    )
    def test_whitespace_and_control_characters_are_refused(self, url: str) -> None:
        # The parser behind the check drops some of them silently (leading spaces, tabs,
        # newlines) and so judges a different URL from the one stored; httpx would then
        # refuse the stored one at every delivery, or post to a relative URL.
        assert "whitespace or control" in refusal(url)


class TestAllowList:
    ALLOWED = ["hooks.example.com", "*.corp.example"]

    @pytest.mark.parametrize(
        "url",
        [
            "https://hooks.example.com/in",
            "https://HOOKS.example.com/in",
            "https://hooks.example.com./in",
            "https://a.corp.example/in",
            "https://a.b.corp.example:8443/in",
        ],
    )
    def test_a_listed_host_or_a_subdomain_of_a_pattern_is_taken(self, url: str) -> None:
        check(url, self.ALLOWED)

    @pytest.mark.parametrize(
        "url",
        [
            "https://other.example.com/",
            "https://sub.hooks.example.com/",
            # A pattern allows subdomains, not the domain itself.
            "https://corp.example/",
            "https://evilcorp.example/",
            "https://corp.example.attacker.net/",
            "https://127.0.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            # The host is what follows the @; credentials are refused before the list anyway.
            "https://hooks.example.com@attacker.net/",
        ],
    )
    def test_any_other_host_is_refused(self, url: str) -> None:
        reason = refusal(url, self.ALLOWED)
        assert "CORRAL_WEBHOOK_ALLOWED_HOSTS" in reason or "credentials" in reason

    def test_the_refusal_names_the_host(self) -> None:
        assert "'attacker.net'" in refusal("https://attacker.net/x", self.ALLOWED)

    def test_the_host_checked_is_the_host_httpx_would_connect_to(self) -> None:
        for url in ("https://a.corp.example/x?next=http://attacker.net", "https://a.corp.example"):
            check(url, self.ALLOWED)
            assert httpx.URL(url).host == "a.corp.example"

    @pytest.mark.parametrize(
        "patterns", [["Hooks.Example.COM"], ["hooks.example.com."], [" hooks.example.com "]]
    )
    def test_patterns_are_compared_as_host_names_are(self, patterns: list[str]) -> None:
        # A list built in code (not split from the environment, which lowercases) matches
        # the same hosts.
        assert host_allowed("hooks.example.com", patterns)
        assert not host_allowed("other.example.com", patterns)

    def test_an_empty_list_allows_every_host(self) -> None:
        assert host_allowed("anything.internal", [])

    def test_the_setting_is_split_and_lowercased_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CORRAL_WEBHOOK_ALLOWED_HOSTS", " Hooks.Example.com, *.Corp.example ,")
        settings = Settings(database_url="postgresql://unused@127.0.0.1/unused")
        assert settings.webhook_allowed_hosts == ["hooks.example.com", "*.corp.example"]
        check("https://x.corp.example/", settings.webhook_allowed_hosts)
