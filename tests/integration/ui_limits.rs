//! The web UI's refusals (every bad input a `400` with its reason, a `413` for a form over
//! the body limit) and the operator page on the admin listener.

use crate::ui::{cli_id, client, form_body, get, server, submit, unescape};

#[tokio::test]
async fn bad_inputs_answer_400_with_the_reason() {
    let srv = server().await;
    let ext = "/?target=metal&version=1.12.0&arch=amd64&secureboot=false";
    let long = "a".repeat(4097);
    let many: String = (0..300).map(|i| format!("&extensions=x{i}")).collect();
    let cases: Vec<(String, &str)> = vec![
        ("/?target=mainframe".into(), "invalid target"),
        ("/?target=metal&version=one".into(), "invalid Talos version"),
        ("/?target=metal&version=1.99.0".into(), "not imported"),
        (
            "/?target=cloud&version=1.12.0&platform=metal".into(),
            "not a cloud platform",
        ),
        (
            "/?target=cloud&version=1.12.0&platform=moon".into(),
            "not a cloud platform",
        ),
        (
            "/?target=sbc&version=1.12.0&board=abacus".into(),
            "no overlay",
        ),
        (
            "/?target=metal&version=1.12.0&arch=riscv64".into(),
            "not offered",
        ),
        (format!("{ext}&secureboot=maybe"), "more than once"),
        (
            "/?target=metal&version=1.12.0&arch=amd64&secureboot=maybe".into(),
            "invalid secureboot",
        ),
        (
            "/?target=cloud&version=1.12.0&platform=aws&arch=amd64&secureboot=true".into(),
            "SecureBoot is not offered",
        ),
        (
            format!("{ext}&extensions=siderolabs/nope"),
            "not in the catalog",
        ),
        (
            format!("{ext}&extensions=-&cmdline-set=true&bootloader=lilo"),
            "invalid bootloader",
        ),
        (
            format!("{ext}&extensions=-&cmdline-set=true&meta=novalue"),
            "META line 1",
        ),
        (
            format!("{ext}&extensions=-&cmdline-set=true&meta=300%3Dx"),
            "META line 1",
        ),
        (
            format!("{ext}&embedded-config=x"),
            "only accepted in a POSTed form",
        ),
        (format!("{ext}&cmdline={long}"), "too long"),
        (format!("{ext}{many}"), "too many"),
        ("/?target=metal&target=cloud".into(), "more than once"),
        ("/?schematic-id=xyz".into(), "invalid schematic-id"),
        (
            format!("{ext}&extensions=-&cmdline-set=true&overlay-options=a%3A+1"),
            "overlay options need a single-board computer",
        ),
        ("/ui/version-doc".into(), "\"version\" is required"),
        ("/ui/version-doc?version=1.99.0".into(), "not imported"),
        ("/ui/extensions-list".into(), "\"version\" is required"),
    ];
    for (path, reason) in &cases {
        let (status, headers, body) = get(&srv, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert!(body.contains(reason), "{path}: {body:?} lacks {reason:?}");
    }
    // A machine configuration before Talos 1.12, and an overlay option that is no mapping
    // (the schematic parser's own 400).
    for (form, reason) in [
        (
            vec![
                ("target", "metal"),
                ("version", "1.11.0"),
                ("arch", "amd64"),
                ("extensions", "-"),
                ("cmdline-set", "true"),
                ("embedded-config", "version: v1alpha1"),
            ],
            "needs Talos 1.12",
        ),
        (
            vec![
                ("target", "sbc"),
                ("version", "1.12.0"),
                ("board", "rpi_generic"),
                ("arch", "arm64"),
                ("extensions", "-"),
                ("cmdline-set", "true"),
                ("overlay-options", "- a list"),
            ],
            "",
        ),
    ] {
        let r = client()
            .post(srv.url("/ui/wizard"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&form))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 400);
        let body = r.text().await.expect("body");
        assert!(body.contains(reason), "{body}");
    }
    // A form larger than http.maxBodyBytes.
    let big = "x".repeat(2 * 1024 * 1024);
    let r = client()
        .post(srv.url("/ui/wizard"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("embedded-config", big.as_str())]))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    let (status, _, _) = get(
        &srv,
        &format!("/ui/schematics/{}?target=metal", "a".repeat(64)),
    )
    .await;
    assert_eq!(status, 404);
    srv.stop().await;
}

#[tokio::test]
async fn the_operator_page_is_on_the_admin_listener_only() {
    let srv = server().await;
    let (status, _, _) = get(&srv, "/admin/ui").await;
    assert_eq!(status, 404, "not on the public listener");
    let (admin, url) = srv.admin("/admin/ui");
    let r = admin.get(&url).send().await.expect("admin");
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().expect("challenge");
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let r = admin
        .get(&url)
        .basic_auth("anyone", Some("wrong"))
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status().as_u16(), 401);
    let token = std::fs::read_to_string(srv.dir.path().join("keys/admin-token")).expect("token");
    // One build, so that the page lists it with its state and duration.
    let id = crate::common::assets::create_schematic(&srv, "customization: {}\n").await;
    let (status, _, text) = get(&srv, &format!("/image/{id}/v1.12.0/cmdline-metal-amd64")).await;
    assert_eq!(status, 200, "{text}");
    let r = admin
        .get(&url)
        .basic_auth("anyone", Some(token.trim()))
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status().as_u16(), 200);
    let body = unescape(&r.text().await.expect("body"));
    let row = "<td><code>cmdline-metal-amd64</code></td><td>v1.12.0</td><td>built</td><td>";
    let at = body
        .find(row)
        .unwrap_or_else(|| panic!("no build row: {body}"));
    let duration = &body[at + row.len()..];
    let duration = &duration[..duration.find("</td>").expect("cell")];
    assert!(
        duration.ends_with(" s") && duration[..duration.len() - 2].parse::<f64>().is_ok(),
        "{duration}"
    );
    for section in [
        "Imported releases",
        "Cache",
        "Builds since start",
        "Cached assets, newest first",
        "Machine assignments",
        "Recent boots",
        "Peers",
    ] {
        assert!(
            body.contains(&format!(">{section}</h")),
            "{section}: {body}"
        );
    }
    assert!(
        body.contains("<td>v1.12.0</td><td>amd64, arm64</td><td>0/3</td>"),
        "{body}"
    );
    assert!(body.contains("Replication is off"), "{body}");
    let r = admin
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status().as_u16(), 200, "the API's bearer token works too");
    srv.stop().await;
}

#[tokio::test]
async fn hostile_values_stay_values() {
    // YAML and flow syntax, quotes, a newline and non-ASCII in every free-text field: each
    // arrives in the schematic as exactly the text given (the ID equals that of a JSON
    // document holding the same strings), never as structure.
    let srv = server().await;
    let args = [
        "a:", "#b", "[c]", "{d:", "e}", "'f'", "\"g\"", "h\ni", "ü&<>", "-", "*j", "&k", "!l",
    ];
    let cmdline = args.join(" ");
    let meta_value = "x: [1, 2] # not a comment\t'\"";
    let config = "version: v1alpha1\n--- \n... \n{a: b}\n";
    let location = submit(
        &srv,
        &[
            ("target", "metal"),
            ("version", "1.12.0"),
            ("arch", "amd64"),
            ("extensions", "-"),
            ("cmdline-set", "true"),
            ("cmdline", &cmdline),
            ("meta", &format!("0x0c={meta_value}")),
            ("embedded-config", config),
        ],
    )
    .await;
    let want = serde_json::json!({
        "customization": {
            "extraKernelArgs": args,
            "meta": [{"key": 12, "value": meta_value}],
            "embeddedMachineConfiguration": config,
        }
    });
    let id = cli_id(&want.to_string());
    assert!(
        location.starts_with(&format!("/ui/schematics/{id}?")),
        "{location}"
    );
    // The page shows them escaped.
    let (status, _, body) = get(&srv, &location).await;
    assert_eq!(status, 200);
    assert!(body.contains("ü&amp;&lt;&gt;"), "{body}");
    assert!(unescape(&body).contains("#b"), "{body}");
}
