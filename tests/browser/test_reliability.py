"""The page log tells a request that the next navigation cancelled from one that is broken.

Under load, a click on "next" can start the new page while the old one is still fetching its favicon: Chromium
cancels that fetch and reports `net::ERR_ABORTED`. That is the browser's normal behaviour, not a fault of the
site; a request that fails while the page stays where it is remains a problem, whatever its error.
"""


def test_request_cancelled_by_the_next_navigation_is_not_a_problem(page, site_url):
    page, log = page
    page.goto(f"{site_url}/book/intro.html", wait_until="load")
    page.route("**/never-answers.png", lambda route: None)  # held open until the page goes away
    page.evaluate("() => document.body.append(Object.assign(new Image(), {src: 'never-answers.png'}))")
    page.wait_for_timeout(200)
    page.goto(f"{site_url}/book/setup.html", wait_until="load")
    page.wait_for_timeout(300)
    cancelled = log.cancelled_requests
    assert any("never-answers.png" in r and "ERR_ABORTED" in r for r in cancelled), cancelled
    assert not log.problems(), "\n".join(log.problems())


def test_request_aborted_without_navigation_is_still_a_problem(page, site_url):
    page, log = page
    page.goto(f"{site_url}/book/intro.html", wait_until="load")
    page.route("**/broken.png", lambda route: route.abort("aborted"))  # net::ERR_ABORTED, nothing navigates
    page.evaluate("() => document.body.append(Object.assign(new Image(), {src: 'broken.png'}))")
    page.wait_for_timeout(500)
    assert any("broken.png" in p and "ERR_ABORTED" in p for p in log.problems()), log.problems()
    assert not log.cancelled_requests
