"""The search page in headless Chromium (Debian's package, driven by Playwright).

Install the browser with ``scripts/install_browser.sh``. These tests skip only when
/usr/bin/chromium is absent, and say so. Screenshots go to ``test-artifacts/screenshots/``
(git-ignored; CI keeps the folder): ``newcomer-*.png`` walk through the page as a first-time
user does, the others show a search result and the admin view.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from _page_fixtures import PASSWORD, USER, build_runtime
from _server_support import live_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 60_000  # the tiny model on a busy 2-core machine; a wait, never a timing assert

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} not installed: run scripts/install_browser.sh")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    runtime, photos = build_runtime(tmp_path_factory.mktemp("browser"))
    with live_server(runtime, lifespan="off") as url:
        yield url, photos
    runtime.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, base_url):
    url, _ = base_url
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/")
    page.evaluate("sessionStorage.clear()")
    page.goto(url + "/ui/")
    yield page
    page.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page, password=PASSWORD):
    page.wait_for_selector("#login:not(.hidden)")
    page.fill("#login-user", USER)
    page.fill("#login-password", password)
    page.click("#login-submit")


def search_text(page, text, cate=""):
    page.fill("#q-cate", cate)
    page.fill("#q-text", text)
    page.click("#q-go")
    page.wait_for_function("document.querySelector('#status').textContent.includes('hits')"
                           " || document.querySelector('#status').classList.contains('error')")


def test_wrong_password_is_refused(page):
    sign_in(page, password="wrong password")
    page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    assert "refused" in page.inner_text("#login-error")
    assert page.is_hidden("#view-search")
    sign_in(page)
    page.wait_for_selector("#view-search:not(.hidden)")
    assert page.is_hidden("#login")


def test_typed_query_shows_results_and_the_api_call(page, base_url):
    _, photos = base_url
    sign_in(page)
    page.wait_for_selector("#q-table option", state="attached")
    search_text(page, "a cup of coffee")
    assert "error" not in page.get_attribute("#status", "class")
    cards = page.locator(".hit")
    assert cards.count() == min(12, len(photos))
    # Every card shows pk, category and a proxima_score; thumbnails load through the endpoint.
    first = cards.first
    assert first.locator(".pk b").inner_text().isdigit()
    assert first.locator(".cate b").inner_text().isdigit()
    float(first.locator(".score b").inner_text())
    page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)")
    query = page.inner_text("#api-query")
    assert "modal=text" in query and "cluster=image_search" in query and "sort=+RANK" in query
    assert "SearchQuery(query=query)" in page.inner_text("#api-sdk")
    assert "curl" in page.inner_text("#api-curl")
    screenshot(page, "page-results")


def test_uploaded_image_ranks_itself_first(page, base_url):
    _, photos = base_url
    sign_in(page)
    page.wait_for_selector("#q-table option", state="attached")
    target = photos[3]
    page.set_input_files("#q-file", str(target.path))
    page.wait_for_function("document.querySelectorAll('.hit').length > 0")
    assert page.locator(".hit").first.get_attribute("data-pk") == str(target.pk)
    assert "modal=image" in page.inner_text("#api-query")
    # "More like this" on another result searches by that result's own image.
    other = page.locator(".hit").nth(2)
    other_pk = other.get_attribute("data-pk")
    other.locator("button.more").click()
    page.wait_for_function(f"document.querySelector('.hit') && document.querySelector('.hit').dataset.pk === '{other_pk}'")


def test_cate_id_filter_limits_results(page, base_url):
    _, photos = base_url
    sign_in(page)
    page.wait_for_selector("#q-table option", state="attached")
    search_text(page, "a photo", cate="3")
    cates = page.locator(".hit .cate b").all_inner_texts()
    expected = sum(1 for p in photos if p.cate_id == 3)
    assert expected > 0 and len(cates) == expected
    assert set(cates) == {"3"}
    assert "filter=cate_id=3" in page.inner_text("#api-query")
    search_text(page, "a photo", cate="x")
    assert "whole number" in page.inner_text("#status")


def test_admin_view_rebuilds_with_live_progress(page, base_url):
    _, photos = base_url
    sign_in(page)
    page.wait_for_selector("#q-table option", state="attached")
    page.click("#tab-admin")
    page.wait_for_selector("#admin-tables tbody tr")
    cells = page.locator("#admin-tables tbody tr").first.locator("td").all_inner_texts()
    assert cells[0] == "image_search" and cells[1] == str(len(photos))
    assert "(live)" in cells[5]
    live_before = cells[5]
    page.click("#admin-tables button.rebuild")
    # The page polls the task registry until the rebuild ends; the bar then reads 100%.
    page.wait_for_function("[...document.querySelectorAll('#admin-tasks .task')].some("
                           "t => /succeeded|failed/.test(t.textContent))")
    task = page.locator("#admin-tasks .task").first
    assert "succeeded" in task.inner_text(), task.inner_text()
    assert f"{len(photos)}/{len(photos)} read" in task.inner_text()
    assert task.locator("progress").get_attribute("value") == "100"
    page.click("#admin-refresh")
    page.wait_for_function(f"document.querySelector('#admin-tables tbody tr td:nth-child(6)')"
                           f".textContent !== {live_before!r}")
    cells = page.locator("#admin-tables tbody tr").first.locator("td").all_inner_texts()
    assert cells[1] == str(len(photos)) and "(live)" in cells[5]
    screenshot(page, "page-admin")


# -- a newcomer's first visit ------------------------------------------------------------

def thumbnails_loaded(page) -> None:
    page.wait_for_function("document.querySelectorAll('.hit').length > 0 && [...document.querySelectorAll('.hit img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")


def test_newcomer_signs_in_searches_rebuilds_and_signs_out(browser, base_url):
    """The path README's first command leads to: sign in, text search, an uploaded image,
    "More like this", a rebuild with its progress bar, sign out (which forgets everything)."""
    url, photos = base_url
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url + "/ui/")
        page.wait_for_selector("#login:not(.hidden)")
        assert page.is_hidden("#sign-out")
        screenshot(page, "newcomer-1-sign-in")
        sign_in(page)
        page.wait_for_selector("#q-table option", state="attached")
        assert page.inner_text("#who") == f"signed in as {USER}" and page.is_visible("#sign-out")
        assert page.input_value("#login-password") == ""  # the form does not keep the password

        search_text(page, "a cat")
        thumbnails_loaded(page)
        assert page.locator(".hit").count() == min(12, len(photos))
        screenshot(page, "newcomer-2-text-search")

        target = photos[1]
        page.set_input_files("#q-file", str(target.path))
        # the photo itself comes first (the text search's results are on the page until then)
        page.wait_for_function(f"document.querySelector('.hit') && document.querySelector('.hit').dataset.pk === '{target.pk}'")
        assert "modal=image" in page.inner_text("#api-query")
        thumbnails_loaded(page)
        screenshot(page, "newcomer-3-image-search")

        other = page.locator(".hit").nth(3)
        other_pk = other.get_attribute("data-pk")
        other.locator("button.more").click()
        page.wait_for_function(f"document.querySelector('.hit') && document.querySelector('.hit').dataset.pk === '{other_pk}'")
        thumbnails_loaded(page)
        screenshot(page, "newcomer-4-more-like-this")

        page.click("#tab-admin")
        page.wait_for_selector("#admin-tables button.rebuild")
        page.wait_for_function("document.querySelector('#admin-tasks').textContent.length > 0")
        earlier = page.locator("#admin-tasks .task").count()  # other tests' rebuilds, on the same service
        # Every state the task list shows, as the page shows it (it polls while the task runs).
        page.evaluate("""() => { window.taskStates = [];
            new MutationObserver(() => window.taskStates.push(document.querySelector('#admin-tasks').textContent))
              .observe(document.querySelector('#admin-tasks'), {childList: true, subtree: true}); }""")
        page.click("#admin-tables button.rebuild")
        # newest first: ours is the first row once there is one more
        page.wait_for_function(f"document.querySelectorAll('#admin-tasks .task').length > {earlier} && "
                               "/succeeded|failed/.test(document.querySelector('#admin-tasks .task').textContent)")
        task = page.locator("#admin-tasks .task").first
        assert "succeeded" in task.inner_text() and f"{len(photos)}/{len(photos)} read" in task.inner_text()
        assert task.locator("progress").get_attribute("value") == "100"
        assert any("running" in seen or "pending" in seen for seen in page.evaluate("window.taskStates"))
        screenshot(page, "newcomer-5-admin-rebuild")

        page.click("#sign-out")
        page.wait_for_selector("#login:not(.hidden)")
        assert page.inner_text("#login-error") == "Signed out."
        assert page.input_value("#login-user") == "" and page.input_value("#login-password") == ""
        assert page.evaluate("sessionStorage.length") == 0
        assert page.evaluate("document.querySelectorAll('.hit, img[src^=\\'blob:\\']').length") == 0
        assert page.is_hidden("#api-box") and page.inner_text("#api-query") == ""
        assert page.inner_text("#who") == "" and page.locator("#q-table option").count() == 0
        assert page.locator("#admin-tables tbody tr").count() == 0
        screenshot(page, "newcomer-6-signed-out")
        page.reload()  # nothing remembered: the sign-in form again
        page.wait_for_selector("#login:not(.hidden)")
        assert page.is_hidden("#view-search")
    finally:
        page.close()


def with_credentials(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


def test_credentials_in_the_address_sign_in_and_leave_the_address(browser, base_url):
    """http://user:pass@host/ui/: relative fetch() URLs would inherit the credentials, which
    Chrome refuses; the page signs in with them, then reloads itself without them."""
    url, _ = base_url
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(with_credentials(url, USER, PASSWORD) + "/ui/")
        page.wait_for_selector("#q-table option", state="attached")
        assert page.inner_text("#who") == f"signed in as {USER}"
        assert page.evaluate("document.URL") == url + "/ui/"  # the password left the address
        search_text(page, "a cup of coffee")
        thumbnails_loaded(page)
        assert "error" not in page.get_attribute("#status", "class")
        screenshot(page, "newcomer-0-credentials-in-address")

        page.click("#sign-out")
        page.goto(with_credentials(url, USER, "not the password") + "/ui/")
        page.wait_for_selector("#login:not(.hidden)")
        page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
        assert "address were refused" in page.inner_text("#login-error")
        assert page.input_value("#login-user") == USER
        assert errors == []
    finally:
        page.close()
