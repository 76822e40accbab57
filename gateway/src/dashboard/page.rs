//! The dashboard page rendered on the server: the same sections the page's script redraws
//! from `/v1/dashboard`, so the page shows the node's state before (or without) the script.

use super::doc::DashboardDoc;
use crate::status::{HostStatus, VolumeStatus};

/// The page: CSS, the layout and the inline script, with markers where the state goes.
const TEMPLATE: &str = include_str!("../dashboard.html");

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "host"
    } else {
        "hosts"
    }
}

fn migration(doc: &DashboardDoc) -> String {
    let m = &doc.migration;
    let total = m.iscsi_hosts + m.nvme_hosts;
    let pct = (m.nvme_hosts * 100).checked_div(total).unwrap_or(0);
    let still: String = if m.still_on_iscsi.is_empty() {
        "<li class=\"none\">none</li>".into()
    } else {
        m.still_on_iscsi
            .iter()
            .map(|h| format!("<li>{}</li>", esc(h)))
            .collect()
    };
    format!(
        "<div class=\"bar\"><div class=\"nvme\" style=\"width:{pct}%\"></div></div>\n\
         <p class=\"counts\"><b id=\"on-nvme\">{n}</b> {nh} on NVMe/TCP \u{b7} \
         <b id=\"on-iscsi\">{i}</b> {ih} on iSCSI \u{b7} <b id=\"moved-pct\">{pct}%</b> on \
         NVMe/TCP</p>\n<h3>Still on iSCSI</h3>\n<ul id=\"still-iscsi\">{still}</ul>",
        n = m.nvme_hosts,
        nh = plural(m.nvme_hosts),
        i = m.iscsi_hosts,
        ih = plural(m.iscsi_hosts),
    )
}

fn hosts(proto: &str, title: &str, list: &[HostStatus]) -> String {
    let items: String = if list.is_empty() {
        "<li class=\"none\">no hosts</li>".into()
    } else {
        list.iter()
            .map(|h| {
                format!(
                    "<li data-host=\"{n}\"><span class=\"name\">{n}</span> \
                     <span class=\"addr\">{a}</span> <span class=\"io\">{r} reads, \
                     {w} writes</span></li>",
                    n = esc(&h.host),
                    a = esc(&h.address),
                    r = h.io.reads,
                    w = h.io.writes,
                )
            })
            .collect()
    };
    format!(
        "<div class=\"proto {proto}\"><h3>{title} <span class=\"count\">{c}</span></h3>\
         <ul class=\"hosts\" data-protocol=\"{proto}\">{items}</ul></div>",
        c = list.len()
    )
}

fn volume(v: &VolumeStatus) -> String {
    format!(
        "<section class=\"volume\" data-volume=\"{name}\">\n\
         <h2>{name} <span class=\"state {state}\">{state}</span></h2>\n\
         <p class=\"meta\">role <b class=\"role\">{role}</b> \u{b7} epoch <b class=\"epoch\">\
         {epoch}</b> \u{b7} {mib} MiB \u{b7} uuid {uuid}</p>\n\
         <div class=\"protos\">{i}{n}</div>\n\
         <div class=\"charts\"><figure><figcaption>Throughput (read + write)</figcaption>\
         <svg class=\"chart\" data-chart=\"bytes\" viewBox=\"0 0 400 150\"></svg></figure>\
         <figure><figcaption>Commands per second</figcaption><svg class=\"chart\" \
         data-chart=\"iops\" viewBox=\"0 0 400 150\"></svg></figure>\
         <figure><figcaption>Latency (mean, \u{b5}s)</figcaption><svg class=\"chart\" \
         data-chart=\"latency\" viewBox=\"0 0 400 150\"></svg></figure></div>\n</section>",
        name = esc(&v.name),
        state = esc(&v.access_state),
        role = esc(&v.role),
        epoch = v.epoch,
        mib = v.size_bytes >> 20,
        uuid = esc(&v.uuid),
        i = hosts("iscsi", "iSCSI", &v.hosts.iscsi),
        n = hosts("nvme", "NVMe/TCP", &v.hosts.nvme),
    )
}

/// The whole page for `doc`.
pub fn render(doc: &DashboardDoc) -> String {
    let volumes: String = doc.volumes.iter().map(volume).collect();
    TEMPLATE
        .replace("<!--tandem:migration-->", &migration(doc))
        .replace("<!--tandem:volumes-->", &volumes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_its_markers_and_no_external_assets() {
        assert!(TEMPLATE.contains("<!--tandem:migration-->"));
        assert!(TEMPLATE.contains("<!--tandem:volumes-->"));
        for external in ["http://", "https://", "src=\"", "<link"] {
            assert!(!TEMPLATE.contains(external), "page loads {external}");
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
