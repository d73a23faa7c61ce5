//! The oracle of the `polling` fuzz target: arbitrary bytes as the body of
//! a client's long-polling POST, through `engineio::split_client_payload`
//! (what the gateway's POST handler runs).
//!
//! Oracles: no panic; an accepted body is UTF-8, its parts are its packets
//! in order (text parts verbatim, without a separator, never OPEN), and
//! agree with `decode_payload`; the packets re-encode to a payload that
//! decodes to the same packets; a refused body that `decode_payload`
//! accepts holds an OPEN.

use confab_protocol::engineio::{
    self, PAYLOAD_SEPARATOR, Packet, PayloadPart, decode_payload, encode_payload,
};

/// Runs every oracle on one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(parts) = engineio::split_client_payload(data) else {
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(packets) = decode_payload(text)
        {
            assert!(
                packets.iter().any(|p| matches!(p, Packet::Open(_))),
                "refused a payload of valid non-OPEN packets"
            );
        }
        return;
    };
    let text = std::str::from_utf8(data).expect("an accepted body is UTF-8");
    assert!(!parts.is_empty(), "an accepted body has a packet");
    let packets = decode_payload(text).expect("decode_payload accepts what the split accepts");
    assert_eq!(packets.len(), parts.len());
    assert_eq!(
        text.split(PAYLOAD_SEPARATOR).count(),
        parts.len(),
        "one part per separated packet"
    );
    for ((part, packet), raw) in parts
        .iter()
        .zip(&packets)
        .zip(text.split(PAYLOAD_SEPARATOR))
    {
        assert!(
            !matches!(packet, Packet::Open(_)),
            "OPEN accepted from a client"
        );
        match part {
            PayloadPart::Text(t) => {
                assert_eq!(*t, raw, "a text part is the packet as sent");
                assert!(!t.contains(PAYLOAD_SEPARATOR));
                assert!(!matches!(packet, Packet::Binary(_)));
                assert_eq!(Packet::decode_text(t).as_ref(), Ok(packet));
                assert_eq!(
                    packet.encode_text().as_deref(),
                    Some(*t),
                    "canonical text form"
                );
            }
            PayloadPart::Binary(b) => {
                assert!(raw.starts_with('b'));
                assert_eq!(packet, &Packet::Binary(b.clone()));
            }
        }
    }
    let again = decode_payload(&encode_payload(&packets)).expect("re-encoded payload decodes");
    assert_eq!(again, packets);
}
