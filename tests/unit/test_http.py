from tfgw.providers.http import Proxies


def test_proxies_follow_scheme_and_no_proxy() -> None:
    proxies = Proxies(
        {
            "HTTPS_PROXY": "http://proxy:3128",
            "http_proxy": "http://plain:80",
            "NO_PROXY": "internal.corp,.local",
        }
    )
    assert [
        proxies.for_url("https://api.openai.com/v1/chat/completions"),
        proxies.for_url("http://vllm:8000/v1/chat/completions"),
        proxies.for_url("https://internal.corp:8443/v1"),
        proxies.for_url("https://gpu.local/v1"),
        proxies.for_url("https://api.openai.com/v1/embeddings"),
    ] == ["http://proxy:3128", "http://plain:80", None, None, "http://proxy:3128"]


def test_no_proxy_environment_means_direct() -> None:
    assert Proxies({"PATH": "/usr/bin"}).for_url("https://api.anthropic.com/v1/messages") is None
