//! The fleet on the status page: headless Chromium draws the Fleet card
//! from a `/status.json` whose `fleet` object the observer built from a
//! fleet view (the fleet's part is stubbed: its view is a value here, as
//! Redis would have it after a node was lost and Redis went away), and
//! hides the card when the document has no `fleet`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cvdmirror::fleet::{
    FleetNode, FleetView, LeaseHolder, LeaseView, LinkLoad, NodeReport, PublishedFile, SyncHealth,
    SyncState,
};
use cvdmirror::observe::{ObserveConfig, Observer};
use tokio::time::Instant;

use crate::observe::page::{browse, rendered_dom, serve_page, signed_sync_status, text_of_table};

/// A node of the stub fleet: `daily` at `daily`, `main` 62, three files,
/// and a long public URL.
fn node(name: &str, daily: u32, capacity: Option<u64>, load: u64) -> FleetNode {
    FleetNode {
        report: NodeReport {
            node: name.to_owned(),
            public_url: format!("https://{name}.eu-central.clamav-mirrors.example.org/"),
            versions: [("daily".to_owned(), daily), ("main".to_owned(), 62)].into(),
            link: LinkLoad { capacity, load },
            files: ["daily.cvd", "main.cvd", "daily-27480.cdiff"]
                .map(|file| (file.to_owned(), PublishedFile::default()))
                .into(),
            ..NodeReport::default()
        },
        age: Duration::from_millis(1_400),
        fresh: true,
        lagging: false,
    }
}

/// Node `mirror-frankfurt-1`'s view: itself (the lease holder, token 7,
/// its link at 65 %), `mirror-frankfurt-2` (link unknown),
/// `mirror-amsterdam-3` lagging a version behind with a failing sync, and,
/// when `with_lost`, `mirror-paris-4`.
fn view(with_lost: bool, redis_lost: Option<Duration>) -> FleetView {
    let mut lagging = node("mirror-amsterdam-3", 27479, Some(125_000_000), 1_000_000);
    lagging.lagging = true;
    lagging.report.sync = SyncState {
        health: SyncHealth::Failing {
            reason: "upstream https://database.clamav.net/daily-27480.cdiff answered 503 Service Unavailable three times in a row".into(),
        },
        last_success: Some(1_764_280_000),
    };
    let mut nodes = vec![
        node("mirror-frankfurt-1", 27480, Some(12_500_000), 8_125_000),
        node("mirror-frankfurt-2", 27480, None, 40_000),
        lagging,
    ];
    if with_lost {
        nodes.push(node("mirror-paris-4", 27480, Some(12_500_000), 0));
    }
    nodes.sort_by(|a, b| a.report.node.cmp(&b.report.node));
    FleetView {
        node: "mirror-frankfurt-1".into(),
        nodes,
        lease: LeaseView {
            holder: Some(LeaseHolder {
                node: "mirror-frankfurt-1".into(),
                token: 7,
            }),
            mine_until: Some(Instant::now() + Duration::from_secs(3600)),
            changes: 2,
        },
        redis_ok: redis_lost.is_none(),
        stale_since: redis_lost.and_then(|lost| Instant::now().checked_sub(lost)),
        stale_after: Duration::from_secs(30),
        computed_at: Instant::now(),
    }
}

/// `/status.json` of an observer following the stub fleet: first with all
/// four nodes, then with `mirror-paris-4` gone and Redis lost for 45 s
/// (longer than `stale_after`, so the view is stale).
pub(super) fn fleet_status() -> serde_json::Value {
    let observer = Observer::new(ObserveConfig::default());
    let current = Arc::new(std::sync::Mutex::new(Arc::new(view(true, None))));
    let views = Arc::clone(&current);
    observer.attach_fleet_view(move || Arc::clone(&views.lock().unwrap()));
    observer.tick(Instant::now(), SystemTime::now());
    *current.lock().unwrap() = Arc::new(view(false, Some(Duration::from_secs(45))));
    observer.tick(Instant::now(), SystemTime::now());
    serde_json::from_str(&observer.status_json_text(false)).unwrap()
}

#[test]
fn the_status_page_shows_the_fleet() {
    let status = fleet_status();
    let fleet = &status["fleet"];
    assert_eq!(fleet["node"], "mirror-frankfurt-1");
    assert_eq!(fleet["redis_ok"], false);
    assert_eq!(fleet["stale"], true);
    assert_eq!(fleet["lease"]["holder"], "mirror-frankfurt-1");
    assert_eq!(fleet["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(fleet["lost"][0]["node"], "mirror-paris-4", "{fleet:#}");
    assert_eq!(fleet["consistent_versions"]["daily"], 27480, "{fleet:#}");

    let url = serve_page(
        cvdmirror::observe::page::HTML.to_owned(),
        status.to_string(),
    );
    let dom = rendered_dom(&url);
    assert!(
        dom.contains("id=\"fleet-card\">") || dom.contains("id=\"fleet-card\" class"),
        "the card is shown: {dom}"
    );
    let card = text_of_table(&dom, "fleet");
    for words in [
        "This node",
        "3 fresh of 3 in view, 1 lost",
        "lost, view stale",
        "no redirects; serving on local limits with the last view",
        "Lease holder",
        "mirror-frankfurt-1 · token 7 · this node",
        "2 seen since start",
        "daily 27480",
    ] {
        assert!(
            card.contains(words),
            "no {words:?} in the fleet card: {card}"
        );
    }
    let table = text_of_table(&dom, "t-fleet");
    let html: Vec<&str> = table.split("<tr").skip(2).collect();
    assert_eq!(html.len(), 4, "three nodes and the lost one: {table}");
    let rows: Vec<String> = html.iter().map(|row| text(row)).collect();
    assert!(
        html[0].contains("title=\"the fleet's newest is 27480\">daily 27479<"),
        "daily 27479 marked as behind: {}",
        html[0]
    );
    let amsterdam = &rows[0];
    for words in [
        "mirror-amsterdam-3",
        "daily 27479 · main 62",
        "1 %",
        "8.0 Mbit/s of 1.00 Gbit/s",
        "failing",
        "answered 503 Service Unavailable three times in a row",
        "lagging",
    ] {
        assert!(amsterdam.contains(words), "no {words:?} in {amsterdam}");
    }
    let frankfurt1 = &rows[1];
    for words in [
        "mirror-frankfurt-1",
        "this node · lease holder",
        "https://mirror-frankfurt-1.eu-central.clamav-mirrors.example.org/",
        "65 %",
        "65.0 Mbit/s of 100.0 Mbit/s",
        "ok",
        "fresh",
        "report 1 s old · 3 files",
    ] {
        assert!(frankfurt1.contains(words), "no {words:?} in {frankfurt1}");
    }
    assert!(
        rows[2].contains("capacity unknown"),
        "mirror-frankfurt-2: {}",
        rows[2]
    );
    assert!(
        rows[3].contains("mirror-paris-4")
            && rows[3].contains("lost")
            && html[3].contains("class=\"lost\""),
        "the lost node: {}",
        html[3]
    );
    assert!(!rows[3].contains("daily"), "no versions for a lost node");
}

/// The text of some markup: tags dropped, entities decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(ch),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn without_a_fleet_the_card_stays_hidden() {
    let json = signed_sync_status();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(doc.get("fleet").is_none(), "no fleet key without a fleet");
    let url = serve_page(cvdmirror::observe::page::HTML.to_owned(), json);
    let out = browse(&url, &["--dump-dom"]);
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(dom.contains("data-renders=\""), "the page rendered: {dom}");
    assert!(
        dom.contains("id=\"fleet-card\" hidden"),
        "the fleet card is hidden: {dom}"
    );
}
