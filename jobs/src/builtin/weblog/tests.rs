use super::*;
use crate::gen::{Generator, WeblogGen};
use crate::split::Lines;

const GRAMMAR: &str = r#"(?-u)^[0-9A-Fa-f:.]+ - (-|u[0-9]+) \[[0-9]+/[A-Za-z]+/[0-9]+:[0-9]+:[0-9]+:[0-9]+ [+-][0-9]+\] "([A-Z]+) ([^ "]+) HTTP/[0-9.]+" ([0-9]+) ([0-9]+|-) "[^"]*" "[^"]*" [0-9]+$"#;

const GOOD: &[u8] = br#"10.1.2.3 - u42 [01/Nov/2026:00:00:01 +0000] "GET /photos/123.jpg HTTP/1.1" 200 5120 "-" "curl/8.5.0" 37"#;

#[test]
fn parses_the_fields_of_a_good_line() {
    let l = parse(GOOD).unwrap();
    assert_eq!(l.user, Some(&b"u42"[..]));
    assert_eq!(
        (l.method, l.path, l.status, l.latency_ms),
        (&b"GET"[..], &b"/photos/123.jpg"[..], 200, 37)
    );
    assert_eq!(photo_view(&l), Some(123));
    // A client on IPv6 views photos as one on IPv4 does.
    for ip in ["2001:db8:85a3::8a2e:370:7334", "::1", "::ffff:10.1.2.3"] {
        let line = [ip.as_bytes(), &GOOD[8..]].concat();
        assert_eq!(
            parse(&line).as_ref().and_then(photo_view),
            Some(123),
            "{ip}"
        );
    }
}

#[test]
fn parser_agrees_with_the_grammar_on_generated_and_hand_made_lines() {
    let re = regex::bytes::Regex::new(GRAMMAR).unwrap();
    let mut data = Vec::new();
    WeblogGen::new(7)
        .write(3_000_000, &mut data, &mut |_| {})
        .unwrap();
    let mut malformed = 0;
    let mut total = 0;
    for line in Lines::new(&data) {
        total += 1;
        let ours = parse(line).is_some();
        assert_eq!(
            ours,
            re.is_match(line),
            "disagree on {:?}",
            String::from_utf8_lossy(line)
        );
        malformed += usize::from(!ours);
    }
    // About 0.1% malformed lines.
    assert!(
        malformed * 2000 > total && malformed * 500 < total,
        "{malformed} of {total}"
    );
    let edge: &[&[u8]] = &[
        b"",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0 ",
        b"1.2.3.4 - u [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p\xff HTTP/1\" 1 - \"\xfe\" \"\" 0",
        b"1.2.3.4 - - [1/\xff/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 *0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"get p HTTP/1\" 1 - \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p q HTTP/1\" 1 - \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 -- \"\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"a\"b\" \"\" 0",
        b"1.2.3.4 - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 99999999999999999999999 - \"\" \"\" 99999999999999999999999",
        b"2001:db8:0:7::1f - u1 [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"::ffff:10.1.2.3 - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"[2001:db8::1] - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        b"client.example - - [1/a/1:1:1:1 +0] \"G p HTTP/1\" 1 - \"\" \"\" 0",
        &GOOD[..GOOD.len() - 1],
        &GOOD[..GOOD.len() - 3],
    ];
    for line in edge {
        assert_eq!(
            parse(line).is_some(),
            re.is_match(line),
            "disagree on {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn views_need_get_an_exact_photo_path_and_200() {
    let with = |method: &str, path: &str, status: u32| {
        photo_view(&LogLine {
            user: None,
            method: method.as_bytes(),
            path: path.as_bytes(),
            status,
            latency_ms: 1,
        })
    };
    assert_eq!(with("GET", "/photos/9.jpg", 200), Some(9));
    assert_eq!(with("HEAD", "/photos/9.jpg", 200), None);
    assert_eq!(with("GET", "/photos/9.jpg", 304), None);
    // The query string is not part of the path: a view at another size is a view.
    assert_eq!(with("GET", "/photos/9.jpg?w=640", 200), Some(9));
    assert_eq!(with("GET", "/photos/9.jpg?", 200), Some(9));
    assert_eq!(with("GET", "/photos/9.jpgx?w=640", 200), None);
    assert_eq!(with("GET", "/photos?/9.jpg", 200), None);
    assert_eq!(with("GET", "/photos/.jpg", 200), None);
    assert_eq!(with("GET", "/photos/9a.jpg", 200), None);
    assert_eq!(
        with("GET", "/photos/99999999999999999999999.jpg", 200),
        None
    );
}

#[test]
fn endpoint_classes_follow_the_documented_rules() {
    let cases = [
        ("/photos/1.jpg", "photo"),
        ("/thumbs/1_256.jpg", "thumbnail"),
        ("/upload", "upload"),
        ("/api/v1/likes", "api"),
        ("/static/site.css", "static"),
        ("/favicon.ico", "static"),
        ("/", "page"),
        ("/search?q=a.b", "page"),
        ("/u/12", "page"),
        ("/robots.txt", "other"),
        ("/wp-login.php", "other"),
    ];
    for (path, class) in cases {
        assert_eq!(endpoint_class(path.as_bytes()), class, "{path}");
    }
}

#[test]
fn photo_counts_merge_like_a_sum() {
    let mut a = vec![(1, 1), (5, 2)];
    merge_counts(&mut a, vec![(5, 1)]);
    merge_counts(&mut a, vec![(3, 1)]);
    merge_counts(&mut a, vec![(0, 4), (3, 1), (9, 9)]);
    assert_eq!(a, vec![(0, 4), (1, 1), (3, 2), (5, 3), (9, 9)]);
}
