//! `report.md`: the human-readable page of a `bench` run, rendered from the `report.json`
//! value of [`super::report`] alone (so a stored report can be rendered again). Pure.

use serde_json::Value;

fn fmt_opt(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => match v.as_str() {
            Some(s) => s.to_string(),
            None => "-".into(),
        },
    }
}

/// Renders `report.md` from a `report.json` value.
pub fn markdown(r: &Value) -> String {
    let b = &r["bench"];
    let m = &r["machine"];
    let lg = &r["loadgen"];
    let cl = &r["cluster"];
    let mut s = String::new();
    s += &format!(
        "# pqdag bench: {} nodes{}, {} submissions/s, {} s\n\n",
        b["nodes"],
        match b["shards"].as_u64() {
            Some(s) if s > 1 => format!(" x {s} shards"),
            _ => String::new(),
        },
        fmt_opt(&b["rate"], 0),
        fmt_opt(&b["duration_s"], 0)
    );
    s += &format!(
        "Machine: {} CPUs, {} ({}), {:.1} GiB RAM, kernel {}, load average {} at start. Sync `{}`, payload {} B, conflict ratio {}.\n\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["cpu_flags"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_default(),
        m["mem_total_bytes"].as_f64().unwrap_or(0.0) / 1073741824.0,
        m["kernel"].as_str().unwrap_or("?"),
        fmt_opt(&m["loadavg_1m_at_start"], 2),
        b["sync"].as_str().unwrap_or("?"),
        b["payload_bytes"],
        b["conflict_ratio"],
    );
    s += "| metric | value |\n|---|---|\n";
    // "Lost" counts what was never accepted too (a refusal the client was told about), so the
    // two parts are shown apart: only the second is a decision the cluster owed and did not make.
    s += &format!(
        "| submitted / finalized / rejected / lost: never accepted (refused or unanswered), acknowledged but undecided | {} / {} / {} / {}: {}, **{}** |\n",
        lg["submitted"], lg["finalized"], lg["rejected"], lg["lost"], lg["lost_unacknowledged"], lg["lost_undecided"]
    );
    s += &format!(
        "| refused at submit (double spends / overload), outspent by their double spend, submit errors | {} / {}, {}, {} |\n",
        lg["double_spends_refused"],
        lg["refused"],
        lg["outspent"].as_u64().unwrap_or(0),
        lg["submit_errors"]
    );
    s += &format!("| loadgen retries / failed over | {} / {} |\n", lg["retries"], lg["failed_over"]);
    s += &format!(
        "| throughput (finalized / load seconds) | **{} payloads/s** in {} vertices/s ({} payloads per vertex, at most {}; polls every {}, batch linger {}) |\n",
        fmt_opt(&lg["throughput_pps"], 0),
        fmt_opt(&cl["throughput_vps"], 0),
        fmt_opt(&cl["payloads_per_vertex"], 1),
        cl["max_batch"],
        cl["poll_interval_us"].as_u64().map_or("?".to_string(), |us| format!("{} ms", us as f64 / 1000.0)),
        cl["batch_linger_us"].as_u64().map_or("?".to_string(), |us| format!("{} ms", us as f64 / 1000.0))
    );
    let f = &lg["finality_ms"];
    s += &format!(
        "| finality, client-observed (submit to final) | p50 {} ms, **p95 {} ms**, p99 {} ms, max {} ms |\n",
        fmt_opt(&f["p50"], 0), fmt_opt(&f["p95"], 0), fmt_opt(&f["p99"], 0), fmt_opt(&f["max"], 0)
    );
    let nq = &cl["node0_finality_ms_bucket_upper_bound"];
    s += &format!("| finality at node-0 (creation/arrival to final, histogram bucket bound) | p50 <= {} ms, p95 <= {} ms, p99 <= {} ms |\n", fmt_opt(&nq["p50"], 0), fmt_opt(&nq["p95"], 0), fmt_opt(&nq["p99"], 0));
    s += &format!(
        "| CPU per finalized vertex, all nodes | **{} us** = {}x the ML-DSA floor of {} us (1 sign of {} us + N-1 verifies of {} us, {}) |\n",
        fmt_opt(&cl["cpu_us_per_finalized_vertex_all_nodes"], 0),
        fmt_opt(&cl["cpu_per_vertex_over_floor"], 1),
        fmt_opt(&cl["mldsa_floor_us_per_vertex"], 0),
        fmt_opt(&cl["mldsa_sign_us"], 0),
        fmt_opt(&cl["mldsa_verify_us"], 0),
        if cl["mldsa_floor_measured"].as_bool() == Some(true) { "measured at the start of this run" } else { "reference constants" }
    );
    if !cl["mldsa_floor_prepared_us_per_vertex"].is_null() {
        s += &format!(
            "| the same against the floor with prepared keys (the engine's sign and verify: the key expanded once) | {}x of {} us (1 sign of {} us + N-1 verifies of {} us) |\n",
            fmt_opt(&cl["cpu_per_vertex_over_prepared_floor"], 1),
            fmt_opt(&cl["mldsa_floor_prepared_us_per_vertex"], 0),
            fmt_opt(&cl["mldsa_sign_prepared_us"], 0),
            fmt_opt(&cl["mldsa_verify_prepared_us"], 0)
        );
    }
    s += &format!("| CPU per finalized payload, all nodes | {} us |\n", fmt_opt(&cl["cpu_us_per_finalized_payload_all_nodes"], 1));
    s += &format!("| node CPU total | {} s ({}% of the machine) |\n", fmt_opt(&cl["node_cpu_seconds_total"], 1), fmt_opt(&r["nfr_001"]["cpu_utilization_pct_of_machine"], 1));
    s += &format!("| loadgen CPU | {} s |\n", fmt_opt(&cl["loadgen_cpu_seconds"], 1));
    s += &format!("| machine busy (all processes) / other processes | {}% of all cores / {}% of one core |\n", fmt_opt(&cl["machine_busy_pct_of_all_cores"], 1), fmt_opt(&cl["other_processes_pct_of_one_core"], 1));
    s += &format!("| max RSS of any node | {} MiB |\n", fmt_opt(&cl["rss_max_mib_any_node"], 1));
    s += &format!("| steepest RSS slope of any (honest) node (`rss_slope_window_s`) | {} MiB/min |\n", fmt_opt(&cl["rss_slope_mib_per_min_max"], 3));
    s += &format!("| largest data directory of any node | {:.1} MiB |\n", cl["disk_bytes_max_any_node"].as_f64().unwrap_or(0.0) / 1048576.0);
    s += &format!("| finalized-set digests | {} |\n", if r["agreement"]["agree"].as_bool() == Some(true) { "**all nodes agree**" } else { "**DISAGREE**" });
    s += &format!("| start-up to healthy / loadgen (load + drain) / measured window (to agreement) | {} s / {} s / {} s |\n\n", fmt_opt(&b["startup_to_healthy_s"], 1), fmt_opt(&b["load_s"], 1), fmt_opt(&b["window_s"], 1));

    s += "| node | finalized | CPU s | % of a core | CPU us/vertex | RSS max MiB | out B/vertex | in B/vertex | polls/vertex | store batches (fsynced) | exit |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    for n in r["nodes"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} ({} s) |\n",
            n["name"].as_str().unwrap_or("?"),
            fmt_opt(&n["finalized"], 0),
            fmt_opt(&n["cpu_seconds"], 1),
            fmt_opt(&n["cpu_pct_of_one_core"], 0),
            fmt_opt(&n["cpu_us_per_finalized_vertex"], 0),
            fmt_opt(&n["rss_max_mib"], 0),
            fmt_opt(&n["bytes_out_per_vertex"], 0),
            fmt_opt(&n["bytes_in_per_vertex"], 0),
            fmt_opt(&n["polls_per_vertex"], 3),
            fmt_opt(&n["store_batches"], 0),
            fmt_opt(&n["store_fsync_batches"], 0),
            n["exit"].as_str().unwrap_or("?"),
            fmt_opt(&n["shutdown_seconds"], 1),
        );
    }
    let nfr = &r["nfr_001"];
    let yn = |v: &Value| if v.as_bool() == Some(true) { "met" } else { "NOT met" };
    s += &format!(
        "\nNFR-001 on this run: finality p95 < 1 s {}; throughput > {} payloads/s {}; memory < 500 MB per node {}; CPU < 50% {} ({}% of the machine).\n",
        yn(&nfr["finality_p95_below_1s"]),
        fmt_opt(&nfr["throughput_target_vps"], 0),
        yn(&nfr["throughput_met"]),
        yn(&nfr["memory_below_500mb_per_node"]),
        yn(&nfr["cpu_below_50pct"]),
        fmt_opt(&nfr["cpu_utilization_pct_of_machine"], 1),
    );
    let bz = &r["byzantine"];
    if bz.is_object() {
        s += &format!("\nByzantine: {} ran `engine run --byzantine {}` at nice {}; loadgen submitted to the honest nodes only and agreement is among them (the attacker frozen while they settle).\n", bz["node"].as_str().unwrap_or("?"), bz["mode"].as_str().unwrap_or("?"), bz["nice"]);
    }
    if r["phases"].is_object() {
        s += &super::phases::markdown(&r["phases"]);
    }
    let cr = &r["crash"];
    if cr.is_object() {
        s += &format!(
            "\nCrash: {} SIGKILLed at t={} s, restarted at t={} s; ready {} s after its restart; longest stall on the survivors {} s; 1-second windows with no finality from kill + 2 s: {}.\n",
            cr["node"].as_str().unwrap_or("?"),
            fmt_opt(&cr["kill_at_s"], 1),
            fmt_opt(&cr["restart_at_s"], 1),
            fmt_opt(&cr["ready_after_restart_s"], 1),
            fmt_opt(&cr["longest_stall_s"], 0),
            cr["empty_windows_from_kill_plus_2s"].as_array().map(|a| a.len()).unwrap_or(0),
        );
    }
    let problems: Vec<&str> = r["problems"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
    if problems.is_empty() {
        s += "\nNo problems: every node exited cleanly after SIGTERM.\n";
    } else {
        s += "\nProblems:\n";
        for p in problems {
            s += &format!("- {p}\n");
        }
    }
    s += "\nPlots: `throughput.svg`, `latency_cdf.svg`, `rss.svg`, `disk.svg`, `cpu.svg`. Raw data: `report.json` (timeline), `loadgen.json`, `metrics/` (each node's last `/metrics` and `/status`), `logs/`.\n";
    s
}
