"""The labeling page against a real server and database: two people rank in headless Chromium (keys, a tie,
an undo and a relabel), the exported pairs are exactly the expected ones, untrusted text stays text, and a
server killed between submissions loses none of them."""

import os
import signal
import sys

import httpx
import pytest

from tasks.label.store import LabelStore
from tests.conftest import free_port, project_env, start_server

pytestmark = pytest.mark.slow

XSS = ["<script>window.pwned = 1</script> great film", '<img src=x onerror="window.pwned = 2"> dull']


def groups() -> list[dict]:
    texts = [
        [XSS[0], XSS[1], " a fine cast"],
        [" loved it", " hated it", " so so"],
        [" brilliant", " boring", " ok"],
        [" moving", " long", " loud"],
    ]
    return [
        {"prompt_id": f"p{i}", "prompt": f"Prompt {i}:", "completions": [{"text": t, "ended": True} for t in ts]}
        for i, ts in enumerate(texts)
    ]


def serve(tmp_path, db):
    port = free_port()
    cmd = [sys.executable, "-m", "flows.label", "serve", "--store", f"sqlite:///{db}", "--port", str(port)]
    env = project_env(tmp_path)
    env["PYTHONPATH"] = str(os.getcwd())
    return start_server(cmd, f"http://127.0.0.1:{port}/api/progress", tmp_path, env, timeout=60), port


def test_two_people_rank_in_a_browser_and_the_pairs_are_exact(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    db = tmp_path / "labels.db"
    LabelStore(f"sqlite:///{db}").add_tasks(groups())
    proc, port = serve(tmp_path, db)
    try:
        browser.get(f"http://127.0.0.1:{port}/")

        def start(name):
            box = browser.find_element(By.ID, "annotator")
            box.clear()
            box.send_keys(name, Keys.ENTER)

        def shown_prompt():
            return browser.find_element(By.ID, "prompt").text

        def rank(keys, prompt):
            WebDriverWait(browser, 10).until(lambda d: shown_prompt() == prompt)
            body = browser.find_element(By.TAG_NAME, "body")
            body.send_keys(*keys, Keys.ENTER)

        start("ann")
        WebDriverWait(browser, 10).until(lambda d: shown_prompt() == "Prompt 0:")
        texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".completion .text")]
        assert texts[:2] == XSS  # untrusted text shown as text ...
        assert browser.execute_script("return window.pwned") is None  # ... and nothing of it ran
        assert browser.find_elements(By.CSS_SELECTOR, "#completions img, #completions script") == []
        if out := os.environ.get("RLHF_SCREENSHOTS"):
            browser.find_element(By.TAG_NAME, "body").send_keys("2", "1")
            browser.save_screenshot(os.path.join(out, "labeling-page.png"))
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.BACKSPACE)
        rank(["2", "1", "3"], "Prompt 0:")  # completion 2 best, then 1, then 3: ranks [2, 1, 3]
        rank(["1", "=", "2", "3"], "Prompt 1:")  # 1 and 2 tied first: ranks [1, 1, 2]
        WebDriverWait(browser, 10).until(lambda d: shown_prompt() == "Prompt 2:")
        browser.find_element(By.TAG_NAME, "body").send_keys("u")  # undo: Prompt 1 comes back
        rank(["3", "2", "1"], "Prompt 1:")  # relabeled: ranks [3, 2, 1]
        WebDriverWait(browser, 10).until(lambda d: shown_prompt() == "Prompt 2:")
        start("bob")  # ann holds Prompt 2: bob gets the next free task
        rank(["1", "2", "3"], "Prompt 3:")
        WebDriverWait(browser, 10).until(lambda d: browser.find_element(By.ID, "done").is_displayed())
        start("ann")
        rank(["1", "2", "3"], "Prompt 2:")
        WebDriverWait(browser, 10).until(lambda d: browser.find_element(By.ID, "done").is_displayed())
        assert browser.find_element(By.ID, "progress").text == "labeled 4 / 4"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    pairs = [
        (p["prompt_id"], p["chosen"], p["rejected"], p["annotator"])
        for p in LabelStore(f"sqlite:///{db}").export_pairs()
    ]
    c = [g["completions"] for g in groups()]
    t = [[x["text"] for x in cs] for cs in c]
    assert pairs == [
        ("p0", t[0][1], t[0][0], "ann"),
        ("p0", t[0][0], t[0][2], "ann"),
        ("p0", t[0][1], t[0][2], "ann"),
        ("p1", t[1][1], t[1][0], "ann"),
        ("p1", t[1][2], t[1][0], "ann"),
        ("p1", t[1][2], t[1][1], "ann"),
        ("p3", t[3][0], t[3][1], "bob"),
        ("p3", t[3][0], t[3][2], "bob"),
        ("p3", t[3][1], t[3][2], "bob"),
        ("p2", t[2][0], t[2][1], "ann"),
        ("p2", t[2][0], t[2][2], "ann"),
        ("p2", t[2][1], t[2][2], "ann"),
    ]


def test_a_killed_server_loses_no_submitted_label(tmp_path):
    db = tmp_path / "labels.db"
    LabelStore(f"sqlite:///{db}").add_tasks(groups())
    proc, port = serve(tmp_path, db)
    api = f"http://127.0.0.1:{port}/api"
    submitted = []
    for name in ("ann", "bob"):
        task = httpx.get(f"{api}/next", params={"annotator": name}).json()["task"]
        r = httpx.post(f"{api}/submit", json={"task_id": task["id"], "annotator": name, "ranks": [1, 2, 3]})
        assert r.status_code == 200
        submitted.append(r.json()["label_id"])
    bad = httpx.post(f"{api}/submit", json={"task_id": 99, "annotator": "ann", "ranks": [1, 2, 3]})
    assert bad.status_code == 400 and bad.json() == {"error": "no task 99"}
    assert httpx.post(f"{api}/submit", json={"task_id": 1, "annotator": "ann", "rank": [1]}).status_code == 422
    os.killpg(proc.pid, signal.SIGKILL)  # between submissions: no shutdown, no flush
    proc.wait(timeout=20)
    again = LabelStore(f"sqlite:///{db}")
    assert again.progress() == {"labeled": 2, "total": 4, "by_annotator": {"ann": 1, "bob": 1}}
    assert len(again.export_pairs()) == 6
    proc, port = serve(tmp_path, db)  # and the page serves on from there
    try:
        task = httpx.get(f"http://127.0.0.1:{port}/api/next", params={"annotator": "ann"}).json()["task"]
        assert task is not None and task["id"] not in [1, 2]  # ann's and bob's labeled tasks stay labeled
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_invited_people_sign_in_by_link_and_nobody_else_writes(tmp_path, browser):
    """Invite tokens: Alice opens her link in headless Chromium (the token goes into an HttpOnly, SameSite=Strict
    cookie and out of the address bar) and labels; requests with no token or a forged one get 401 on every write
    and the store is unchanged; a valid token's holder cannot write under another name; a revoked link stops."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from tasks.label import access
    from tasks.label.archive import archive
    from tasks.label.page import COOKIE

    db = tmp_path / "labels.db"
    store = LabelStore(f"sqlite:///{db}")
    store.add_tasks(groups())
    alice = access.invite(store, "Alice Smith")
    proc, port = serve(tmp_path, db)
    base = f"http://127.0.0.1:{port}"
    try:
        browser.delete_all_cookies()
        browser.get(f"{base}/?token={alice}")
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "signed").text == "Signed in as Alice Smith")
        assert "token" not in browser.current_url and not browser.find_element(By.ID, "annotator").is_displayed()
        cookie = browser.get_cookie(COOKIE)
        assert cookie["value"] == alice and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == ""  # the page's scripts never see it
        browser.find_element(By.ID, "start").click()
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "prompt").text == "Prompt 0:")
        browser.find_element(By.TAG_NAME, "body").send_keys("1", "2", "3", Keys.ENTER)
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "prompt").text == "Prompt 1:")

        before = archive(store)
        writes = [
            ("post", "/api/submit", {"task_id": 2, "annotator": "Alice Smith", "ranks": [1, 2, 3]}),
            ("post", "/api/skip", {"task_id": 2, "annotator": "Alice Smith"}),
            ("post", "/api/undo", {"annotator": "Alice Smith"}),
        ]
        for cookies in ({}, {COOKIE: "forged-" + alice[7:]}):
            with httpx.Client(base_url=base, cookies=cookies) as client:
                assert client.get("/api/next", params={"annotator": "Alice Smith"}).status_code == 401
                for method, path, body in writes:
                    r = client.request(method, path, json=body)
                    assert r.status_code == 401 and "invite link" in r.json()["error"], (cookies, path)
        assert httpx.get(f"{base}/?token=forged").status_code == 401
        assert archive(store) == before  # nothing written, nothing handed out

        bob = access.invite(store, "Bob")
        with httpx.Client(base_url=base, cookies={COOKIE: bob}) as client:
            task = client.get("/api/next", params={"annotator": "Alice Smith"}).json()["task"]
            r = client.post("/api/submit", json={"task_id": task["id"], "annotator": "Alice Smith", "ranks": [3, 2, 1]})
            assert r.status_code == 200
        access.revoke(store, "Alice Smith")
        with httpx.Client(base_url=base, cookies={COOKIE: alice}) as client:
            assert client.post("/api/undo", json={}).status_code == 401
    finally:
        browser.delete_all_cookies()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    by = {}
    for p in LabelStore(f"sqlite:///{db}").export_pairs():
        by[p["annotator"]] = by.get(p["annotator"], 0) + 1
    assert by == {"Alice Smith": 3, "Bob": 3}  # Bob's label is his, whatever name his request claimed


def test_the_page_refuses_other_machines_until_someone_is_invited(tmp_path):
    import subprocess

    from tasks.label import access

    db = tmp_path / "labels.db"
    LabelStore(f"sqlite:///{db}").add_tasks(groups())
    port = free_port()
    cmd = [sys.executable, "-m", "flows.label", "serve", "--store", f"sqlite:///{db}", "--host", "0.0.0.0"]
    env = project_env(tmp_path) | {"PYTHONPATH": str(os.getcwd())}
    proc = subprocess.run([*cmd, "--port", str(port)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "0.0.0.0 is reachable from other machines, and nobody is invited" in proc.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/progress", timeout=2)
    access.invite(LabelStore(f"sqlite:///{db}"), "Alice")
    invited = subprocess.run(
        [sys.executable, "-m", "flows.label", "invite", "Bob", "--store", f"sqlite:///{db}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert invited.returncode == 0 and "/?token=" in invited.stdout
