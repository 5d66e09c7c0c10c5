"""The portal in a real browser: Debian's chromium driven by Playwright against a real `shoal serve`.

Sign-in (client secret and the one-time link), the live node heatmap, a running task's output, actions from the
pages, what a Reader sees and may post, CSRF and cookie flags. Screenshots of the main views go to
``SHOAL_SCREENSHOTS_DIR`` when it is set (``docs/screenshots`` holds the ones the README shows).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as bm

from batch_fixtures import LOCATION, NODE_AGENT, create_account, wait_for
from harness import REPO, ShoalServer
from shoal.azure import Shoal

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("SHOAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
HOST_IMAGE = bm.BatchVmImageReference(publisher="shoal", offer="host", sku="host", version="latest")
WAIT_MS = 120_000  # a ceiling for things that happen on their own (nodes booting), never a measured time
POOL = "heat"


@pytest.fixture(scope="module")
def portal_server() -> Iterator[ShoalServer]:
    """A server of this module's own: its one-time sign-in link is printed at its start and is still fresh."""
    srv = ShoalServer().start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def admin(portal_server: ShoalServer) -> Shoal:
    return Shoal.from_env_json(portal_server.env)


@pytest.fixture(scope="module")
def batch(admin: Shoal) -> tuple[str, Any]:
    """A Batch account with an empty pool of host-image nodes; (account name, Batch client)."""
    from azure.mgmt.resource.resources.models import ResourceGroup

    group = f"portal-{uuid.uuid4().hex[:6]}"
    admin.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    account = create_account(admin, group)
    client = admin.batch_client(account.account_endpoint)
    client.create_pool(bm.BatchPoolCreateOptions(
        id=POOL, vm_size="standard_d2s_v3", target_dedicated_nodes=0, task_slots_per_node=2,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST_IMAGE,
                                                                     node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: client.get_pool(POOL).allocation_state == "steady", "the empty pool")
    return account.name, client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("The portal tests need Debian's chromium (.ci/run installs it).")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield launched
        launched.close()


def new_page(browser: Any, *, bypass_csp: bool = True) -> Any:
    """A page of a new browser context. The portal's Content-Security-Policy allows no string evaluation, which
    Playwright's waiting functions need: the test that checks the policy itself opens its page without bypass."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900},
                                  bypass_csp=bypass_csp)
    context.set_default_timeout(WAIT_MS)
    return context.new_page()


def sign_in(page: Any, server: ShoalServer, client_id: str, secret: str) -> None:
    page.goto(f"{server.base_url}/portal/")
    assert "/portal/signin" in page.url  # not signed in yet: the sign-in page
    page.fill("input[name=client_id]", client_id)
    page.fill("input[name=client_secret]", secret)
    page.click("#signin button[type=submit]")
    page.wait_for_url(f"{server.base_url}/portal/")


@pytest.fixture(scope="module")
def owner_page(browser: Any, portal_server: ShoalServer) -> Any:
    page = new_page(browser)
    sign_in(page, portal_server, portal_server.env["clientId"], portal_server.env["clientSecret"])
    return page


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("SHOAL_SCREENSHOTS_DIR")
    if folder:
        target = Path(folder) if Path(folder).is_absolute() else REPO / folder
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / f"{name}.png"), full_page=True)


def cells(page: Any, state: str | None = None) -> int:
    selector = "#heatmap .cell" + (f".s-{state}" if state else "")
    return int(page.eval_on_selector_all(selector, "els => els.length"))


def csrf_of(page: Any) -> str:
    return str(page.get_attribute("meta[name=csrf-token]", "content"))


# --- signing in ----------------------------------------------------------------------------------------------
def test_sign_in_with_a_client_secret_sets_hardened_session_cookies(browser: Any, portal_server: ShoalServer
                                                                    ) -> None:
    page = new_page(browser, bypass_csp=False)
    refused: list[str] = []
    page.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(f"{portal_server.base_url}/portal/")
    page.fill("input[name=client_id]", portal_server.env["clientId"])
    page.fill("input[name=client_secret]", "not-the-secret")
    page.click("#signin button[type=submit]")
    assert "AADSTS7000215" in page.inner_text("[role=alert]")  # the token endpoint's own error
    sign_in(page, portal_server, portal_server.env["clientId"], portal_server.env["clientSecret"])
    assert "shoal-admin" in page.inner_text("header")
    cookie = next(c for c in page.context.cookies() if c["name"] == "shoal_portal")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/portal"
    assert refused == []  # the pages' own script and styles pass their policy
    forged = {**cookie, "value": cookie["value"][:-2] + ("AA" if not cookie["value"].endswith("AA") else "BB")}
    page.context.add_cookies([forged])
    page.goto(f"{portal_server.base_url}/portal/")
    assert "/portal/signin" in page.url  # a cookie whose signature does not match is no session
    page.context.add_cookies([cookie])
    page.goto(f"{portal_server.base_url}/portal/")
    page.click("header button[type=submit]")  # sign out
    page.wait_for_url(re.compile(r".*/portal/signin$"))
    assert not [c for c in page.context.cookies() if c["name"] == "shoal_portal"]
    page.context.close()


def test_the_one_time_link_serve_prints_signs_in_once(browser: Any, portal_server: ShoalServer) -> None:
    lines = [line for line in portal_server.log.read_text().splitlines() if "Portal: https://" in line]
    link = re.search(r"(https://\S+/portal/signin/link\?code=\S+)", lines[-1])
    assert link is not None, lines
    fresh = portal_server.cli("portal-link").stdout.strip()  # another one, for later
    assert fresh.startswith(f"{portal_server.base_url}/portal/signin/link?code=") and fresh != link.group(1)
    page = new_page(browser)
    page.goto(link.group(1))
    page.wait_for_url(f"{portal_server.base_url}/portal/")
    assert "shoal-admin" in page.inner_text("header")
    again = new_page(browser)
    response = again.goto(link.group(1))
    assert response is not None and response.status == 401
    assert "already used" in again.inner_text("[role=alert]")
    assert not [c for c in again.context.cookies() if c["name"] == "shoal_portal"]
    again.goto(fresh)
    again.wait_for_url(f"{portal_server.base_url}/portal/")
    page.context.close()
    again.context.close()


# --- the pool's heatmap, and resizing from the page --------------------------------------------------------------
def test_the_heatmap_follows_a_pool_from_0_to_20_idle_nodes(owner_page: Any, portal_server: ShoalServer,
                                                           batch: tuple[str, Any]) -> None:
    account, client = batch
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/")
    screenshot(page, "home")
    page.click(f"text={account}")
    page.wait_for_selector(f"a:text('{POOL}')")
    page.click(f"a:text('{POOL}')")
    page.wait_for_selector("#heatmap")
    assert cells(page) == 0
    page.evaluate("window.samePage = true")  # gone if the page were reloaded
    resize = client.begin_resize_pool(POOL, bm.BatchPoolResizeOptions(target_dedicated_nodes=20), polling_interval=1)
    page.wait_for_function("document.querySelectorAll('#heatmap .cell.s-idle').length === 20")
    resize.result()
    assert page.evaluate("window.samePage") is True  # the stream updated the cells in place
    assert page.inner_text("[data-field=current_dedicated]") == "20"
    assert page.inner_text("[data-field=allocation_state]") == "steady"
    assert "Idle 20" in page.inner_text("#legend")
    assert page.input_value("#resize-form input[name=dedicated]") == "20"  # the form offers the new target


def test_resize_from_the_page_with_the_api_s_errors(owner_page: Any, portal_server: ShoalServer,
                                                   batch: tuple[str, Any]) -> None:
    account, client = batch
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/{POOL}")
    page.fill("#resize-form input[name=dedicated]", "lots")
    with page.expect_navigation():
        page.click("#resize-form button[type=submit]")
    assert page.get_attribute("[role=alert]", "data-error-code") == "InvalidPropertyValue"
    assert "targetDedicatedNodes" in page.inner_text("[role=alert]")
    page.fill("#resize-form input[name=dedicated]", "24")
    with page.expect_navigation():
        page.click("#resize-form button[type=submit]")
    assert page.inner_text("[data-field=target_dedicated]") == "24"
    assert client.get_pool(POOL).target_dedicated_nodes == 24
    page.wait_for_function("document.querySelectorAll('#heatmap .cell.s-idle').length === 24")


def test_a_heatmap_update_of_2500_cells_is_applied_in_place(owner_page: Any, portal_server: ShoalServer,
                                                           batch: tuple[str, Any]) -> None:
    """The issue's target is 100 ms for a 2,500-node heatmap update: measured here with the Performance API and
    printed (the bound asserted is generous: these machines are shared)."""
    account, _ = batch
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/{POOL}")
    page.wait_for_function("document.querySelectorAll('#heatmap .cell').length >= 20")
    timings = page.evaluate("""async () => {
        const ids = Array.from({length: 2500}, (_, i) => 'tvm-synthetic-' + i);
        const frame = () => new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
        shoalHeatmap.apply({set: ids.map((id) => [id, 'creating'])});
        await frame(); await frame();
        const states = ['idle', 'running', 'starting'];
        const out = [];
        for (let round = 0; round < 5; round++) {
            shoalHeatmap.apply({set: ids.map((id, i) => [id, states[(i + round) % 3]])});
            const apply = performance.getEntriesByName('heatmap-apply').at(-1).duration;
            await frame(); await frame();
            const painted = performance.getEntriesByName('heatmap-frame').at(-1).duration;
            out.push({apply, painted});
        }
        return {out, cells: document.querySelectorAll('#heatmap .cell').length};
    }""")
    assert timings["cells"] >= 2500
    applies = sorted(t["apply"] for t in timings["out"])
    painted = sorted(t["painted"] for t in timings["out"])
    print(f"\nheatmap update of 2,500 cells: apply median {applies[2]:.1f} ms (min {applies[0]:.1f}, max "
          f"{applies[-1]:.1f}); until the next frame median {painted[2]:.1f} ms (max {painted[-1]:.1f})")
    assert applies[2] < 1000  # generous: the target (100 ms) is printed above, not asserted on shared machines


def test_the_autoscale_editor_evaluates_shows_every_variable_and_enables(
        owner_page: Any, portal_server: ShoalServer, batch: tuple[str, Any]) -> None:
    account, client = batch
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/{POOL}")
    page.click("#autoscale-editor")
    page.fill("textarea[name=formula]", "$busy = $CurrentDedicatedNodes * 2;\n"
                                        "$TargetDedicatedNodes = min(1, $busy);")
    with page.expect_navigation():
        page.click("#evaluate")
    busy = 2 * client.get_pool(POOL).current_dedicated_nodes
    assert page.inner_text("#variables tr[data-variable='$busy'] td:last-child") == str(busy)
    assert page.inner_text("#variables tr[data-variable='$TargetDedicatedNodes'] td:last-child") == "1"
    assert "$TargetDedicatedNodes=1" in page.inner_text("#results")
    assert client.get_pool(POOL).enable_auto_scale is False  # evaluating changes nothing
    screenshot(page, "autoscale-editor")
    page.fill("textarea[name=formula]", "$x = ;")
    with page.expect_navigation():
        page.click("#evaluate")
    assert page.get_attribute("#evaluation .alert", "data-error-code") == "InvalidAutoScaleFormula"

    client.create_pool(bm.BatchPoolCreateOptions(
        id="scaled", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST_IMAGE,
                                                                     node_agent_sku_id=NODE_AGENT)))
    wait_for(lambda: client.get_pool("scaled").allocation_state == "steady", "the pool")
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/scaled/autoscale")
    page.fill("textarea[name=formula]", "$TargetDedicatedNodes = 1;")
    page.fill("input[name=interval]", "PT5M")
    with page.expect_navigation():
        page.click("#enable")
    assert page.url.endswith(f"/portal/batch/{account}/pools/scaled")
    assert "Enabled, every PT5M" in page.inner_text("#autoscale")
    page.wait_for_function("document.querySelectorAll('#heatmap .cell.s-idle').length === 1")
    pool = client.get_pool("scaled")
    assert pool.enable_auto_scale is True and pool.auto_scale_formula == "$TargetDedicatedNodes = 1;"
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/scaled/autoscale")
    with page.expect_navigation():
        page.click("#disable-form button[type=submit]")
    assert client.get_pool("scaled").enable_auto_scale is False


# --- jobs and tasks -----------------------------------------------------------------------------------------------
def test_a_running_task_s_output_arrives_live_and_the_job_can_be_terminated(
        owner_page: Any, portal_server: ShoalServer, batch: tuple[str, Any]) -> None:
    account, client = batch
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=POOL)))
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}")
    page.fill("#add-task-form input[name=id]", "follow")
    page.fill("#add-task-form input[name=command_line]",
              "/bin/sh -c 'echo hello-from-the-node; echo warming-up >&2; sleep 600'")
    with page.expect_navigation():
        page.click("#add-task-form button[type=submit]")
    assert page.url.endswith(f"/jobs/{job_id}/tasks/follow")  # the new task's page
    page.wait_for_function("document.getElementById('stdout').textContent.includes('hello-from-the-node')")
    assert page.inner_text("[data-field=state]") == "running"  # it sleeps: the output came while it ran
    page.wait_for_function("document.getElementById('stderr').textContent.includes('warming-up')")
    screenshot(page, "task-output")

    page.click("[data-field=node_id] a")
    page.wait_for_selector("#files")
    assert f"workitems/{job_id}/job-1/follow/stdout.txt" in page.inner_text("#files")
    screenshot(page, "node")

    page.goto(f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}")
    page.wait_for_function("document.querySelector('[data-count=running]').textContent === '1'")
    page.wait_for_function("JSON.parse(document.getElementById('timeline').dataset.last || '[0,0,0]')[2] === 1")
    screenshot(page, "job")
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/{POOL}")
    page.wait_for_function("document.querySelectorAll('#heatmap .cell.s-running').length === 1")
    screenshot(page, "pool-heatmap")
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#terminate-form button[type=submit]")
    wait_for(lambda: client.get_job(job_id).state == "completed", "the job to terminate")
    page.wait_for_function("document.querySelector('[data-count=running]').textContent === '0'")
    assert page.inner_text("[data-field=state]") == "completed"
    # The chart of counts over time ends with the task failed (terminated), and shows it ran before.
    page.wait_for_function("JSON.parse(document.getElementById('timeline').dataset.last)[4] === 1")
    assert page.query_selector("#timeline polyline[data-series=running]") is not None
    page.click("text=Completed")  # the task list's state filter
    assert page.inner_text("#tasks tbody").count("follow") == 1


def test_adding_a_task_shows_the_api_s_error(owner_page: Any, portal_server: ShoalServer,
                                            batch: tuple[str, Any]) -> None:
    account, client = batch
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=POOL)))
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="taken", command_line="true"))
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}")
    page.fill("#add-task-form input[name=id]", "taken")
    page.fill("#add-task-form input[name=command_line]", "true")
    with page.expect_navigation() as nav:
        page.click("#add-task-form button[type=submit]")
    assert nav.value.status == 409
    assert page.get_attribute("[role=alert]", "data-error-code") == "TaskExists"


# --- rights and forgery ---------------------------------------------------------------------------------------
def test_a_reader_sees_no_actions_and_is_refused_when_posting_anyway(
        browser: Any, portal_server: ShoalServer, batch: tuple[str, Any]) -> None:
    account, client = batch
    reader = portal_server.cli_json("principal", "create", f"reader-{uuid.uuid4().hex[:6]}", "--json")
    portal_server.cli("role-assignment", "create", "--assignee", reader["clientId"], "--role", "Reader")
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id=POOL)))
    page = new_page(browser)
    sign_in(page, portal_server, reader["clientId"], reader["clientSecret"])
    pool_url = f"{portal_server.base_url}/portal/batch/{account}/pools/{POOL}"
    page.goto(pool_url)
    page.wait_for_function("document.querySelectorAll('#heatmap .cell').length > 0")
    assert page.query_selector("#pool-actions") is None and page.query_selector("form[action$=resize]") is None
    page.goto(f"{pool_url}/autoscale")
    assert page.query_selector("#enable") is None and page.query_selector("#evaluate") is not None
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}")
    assert page.query_selector("#job-actions") is None
    target = client.get_pool(POOL).target_dedicated_nodes
    csrf = csrf_of(page)
    for url, form in ((f"{pool_url}/resize", {"dedicated": "1"}), (f"{pool_url}/delete", {}),
                      (f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}/terminate", {}),
                      (f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}/tasks",
                       {"id": "sneaky", "command_line": "true"}),
                      (f"{pool_url}/autoscale/enable", {"formula": "$TargetDedicatedNodes = 0;"})):
        response = page.request.post(url, form={"csrf": csrf, **form}, max_redirects=0)
        assert response.status == 403, url
        assert "AuthorizationFailed" in response.text()
    assert client.get_pool(POOL).target_dedicated_nodes == target
    assert client.get_job(job_id).state == "active"
    page.context.close()


def test_posts_without_the_csrf_token_or_from_another_site_are_refused(
        owner_page: Any, portal_server: ShoalServer, batch: tuple[str, Any]) -> None:
    account, client = batch
    page = owner_page
    pool_url = f"{portal_server.base_url}/portal/batch/{account}/pools/{POOL}"
    page.goto(pool_url)
    target = client.get_pool(POOL).target_dedicated_nodes
    for form, headers in (({"dedicated": "3"}, {}), ({"dedicated": "3", "csrf": "forged"}, {}),
                          ({"dedicated": "3", "csrf": csrf_of(page)}, {"Origin": "https://evil.example"})):
        response = page.request.post(f"{pool_url}/resize", form=form, headers=headers, max_redirects=0)
        assert response.status == 403
        assert "Refused" in response.text()
    assert client.get_pool(POOL).target_dedicated_nodes == target
    # The sign-in form is protected too (no session yet: its own anti-forgery cookie).
    response = page.request.post(f"{portal_server.base_url}/portal/signin", max_redirects=0, form={
        "client_id": portal_server.env["clientId"], "client_secret": portal_server.env["clientSecret"]})
    assert response.status == 403


def test_deleting_a_pool_from_the_page_and_its_task_output_stays_readable(
        owner_page: Any, portal_server: ShoalServer, batch: tuple[str, Any]) -> None:
    account, client = batch
    client.create_pool(bm.BatchPoolCreateOptions(
        id="doomed", vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(image_reference=HOST_IMAGE,
                                                                     node_agent_sku_id=NODE_AGENT)))
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    client.create_job(bm.BatchJobCreateOptions(id=job_id, pool_info=bm.BatchPoolInfo(pool_id="doomed")))
    client.create_task(job_id, bm.BatchTaskCreateOptions(id="last-words", command_line="echo kept-after-delete"))
    wait_for(lambda: client.get_task(job_id, "last-words").state == "completed", "the task")
    page = owner_page
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/doomed")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#delete-form button[type=submit]")
    assert page.url.endswith(f"/portal/batch/{account}")
    screenshot(page, "account")
    wait_for(lambda: "doomed" not in [p.id for p in client.list_pools()], "the pool to be deleted")
    # Its node is gone; the task's output is still there (Azure loses it with the node).
    page.goto(f"{portal_server.base_url}/portal/batch/{account}/jobs/{job_id}/tasks/last-words")
    page.wait_for_function("document.getElementById('stdout').textContent.includes('kept-after-delete')")
    # The node's page stays too, as a node that is gone, with the logs it left.
    node_id = client.get_task(job_id, "last-words").node_info.node_id
    response = page.goto(f"{portal_server.base_url}/portal/batch/{account}/pools/doomed/nodes/{node_id}")
    assert response is not None and response.status == 200
    assert "gone" in page.text_content("main") and "stdout.txt" in page.text_content("main")


# --- the source document's portal steps: snapshots, an image, its lineage --------------------------------------
def test_snapshot_a_vm_disk_and_make_an_image_from_the_page_then_see_its_lineage(
        owner_page: Any, browser: Any, portal_server: ShoalServer, admin: Shoal) -> None:
    from azure.mgmt.compute.models import DataDisk, HardwareProfile, StorageProfile, VirtualMachine
    from azure.mgmt.resource.resources.models import ResourceGroup

    from batch_fixtures import HOST

    group = f"seed-{uuid.uuid4().hex[:6]}"
    admin.resource_client().resource_groups.create_or_update(group, ResourceGroup(location=LOCATION))
    compute = admin.compute_client()
    vm = compute.virtual_machines.begin_create_or_update(group, "prep", VirtualMachine(
        location=LOCATION, hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
        storage_profile=StorageProfile(image_reference=HOST, data_disks=[
            DataDisk(lun=0, create_option="Empty", disk_size_gb=4)]))).result()
    os_disk, data_disk = vm.storage_profile.os_disk.managed_disk.id, vm.storage_profile.data_disks[0].managed_disk.id

    page = owner_page
    group_url = f"{portal_server.base_url}/portal/groups/{group}"
    for disk_id, name in ((os_disk, "os-snap"), (data_disk, "data-snap")):
        page.goto(group_url)
        page.select_option("#snapshot-form select[name=disk]", disk_id)
        page.fill("#snapshot-form input[name=name]", name)
        page.click("#snapshot-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/portal/lineage\?id=.*"))
        wait_for(lambda n=name: compute.snapshots.get(group, n).provisioning_state == "Succeeded", name)
    # A snapshot name Azure refuses: the API's error on the page, nothing made.
    page.goto(group_url)
    page.fill("#snapshot-form input[name=name]", "bad/name")
    page.click("#snapshot-form button[type=submit]")
    assert page.query_selector("[data-error-code]") is not None

    page.goto(group_url)
    snapshots = {s.name: s.id for s in compute.snapshots.list_by_resource_group(group)}
    page.select_option("#image-form select[name=os_snapshot]", snapshots["os-snap"])
    page.select_option("#image-form select[name=data_snapshots]", [snapshots["data-snap"]])
    page.fill("#image-form input[name=name]", "img")
    page.click("#image-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/portal/lineage\?id=.*images.*"))
    image = wait_for(lambda: (i := compute.images.get(group, "img")).provisioning_state == "Succeeded" and i, "image")
    assert image.storage_profile.os_disk.snapshot.id.lower() == snapshots["os-snap"].lower()
    assert [(d.lun, d.snapshot.id.lower()) for d in image.storage_profile.data_disks] == [
        (0, snapshots["data-snap"].lower())]

    # The lineage page: base -> VM -> disks -> snapshots -> image, drawn and listed.
    page.goto(f"{portal_server.base_url}/portal/lineage?id={image.id}")
    stages = page.eval_on_selector_all("#lineage-nodes tr[data-stage]", "rows => rows.map(r => r.dataset.stage)")
    assert {"base", "vm", "disk", "snapshot", "image"} <= set(stages)
    assert page.query_selector("#lineage svg") is not None
    screenshot(page, "lineage")
    svg = page.request.get(f"{portal_server.base_url}/portal/lineage.svg?id={image.id}")
    assert svg.status == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text() and "img" in svg.text()

    # A Reader sees the lineage but no snapshot or image forms, and is refused if it posts anyway.
    reader = portal_server.cli_json("principal", "create", f"reader-{uuid.uuid4().hex[:6]}", "--json")
    portal_server.cli("role-assignment", "create", "--assignee", reader["clientId"], "--role", "Reader")
    other = new_page(browser)
    sign_in(other, portal_server, reader["clientId"], reader["clientSecret"])
    other.goto(group_url)
    assert other.query_selector("#image-actions") is None
    response = other.request.post(f"{group_url}/snapshots", max_redirects=0,
                                  form={"csrf": csrf_of(other), "disk": os_disk, "name": "sneaky"})
    assert response.status == 403 and "AuthorizationFailed" in response.text()
    assert "sneaky" not in {s.name for s in compute.snapshots.list_by_resource_group(group)}
    other.goto(f"{portal_server.base_url}/portal/lineage?id={image.id}")
    assert other.query_selector("#lineage svg") is not None
    other.context.close()
