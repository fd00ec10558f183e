import threading, time, redis
from tests.faults.test_faults import submit, spec_for, fault_app, wait_for, reported_models
from dbt_celery.core.plan import plan_summary

def dump(run, t0):
    st = run.store
    uids = list(plan_summary(st, run.id) or {})
    claims = st.claims(run.id, [f"enqueue_{u}" for u in uids])
    outs = st.outcomes(run.id, uids)
    seen = st.seen(run.id, uids + ["__watchdog__"])
    rows = []
    for u in uids + ["__watchdog__"]:
        short = u.split(".")[2] if "." in u else u
        rows.append(f"{short}: claim={round(claims[f'enqueue_{u}']-t0,1) if f'enqueue_{u}' in claims else None} out={outs[u].state.value if u in outs else None} seen={round(seen[u]['at']-t0,1) if u in seen else None}")
    print(round(time.time()-t0,1), " | ".join(rows))

def test_scratch(private_redis, audit, audited_project, fault_workers):
    cmds = []
    def mon():
        c = redis.Redis.from_url(private_redis.url)
        with c.monitor() as m:
            for c in m.listen():
                cmd = c["command"]
                if cmd.strip('"').upper().startswith(("LPUSH", "RPUSH")) and "celeryev" not in cmd and "pidbox" not in cmd:
                    cmds.append((time.time(), c["client_port"], cmd[:300]))
    threading.Thread(target=mon, daemon=True).start()
    workers = fault_workers(private_redis.url)
    t0 = time.time()
    run = submit(spec_for(audited_project, audit, sleep=1.0), app=fault_app(private_redis.url))
    wait_for(lambda: reported_models(run), 60, "first")
    print("kill at", time.time() - t0)
    dump(run, t0)
    workers.kill("consumer")
    dump(run, t0)
    time.sleep(2)
    workers.start("consumer")
    last = [0]
    def upd(st):
        if time.time() - last[0] > 3:
            last[0] = time.time()
            dump(run, t0)
    try:
        st = run.wait(timeout=60, on_update=upd)
        print("END", time.time() - t0, st.state)
    finally:
        for c in cmds:
            print(round(c[0]-t0, 2), c[1], c[2][:60], 'dbt_celery' in c[2] and c[2].split('shadow')[1][:40] if 'shadow' in c[2] else '')
