//! Decode + encode of one published message as clients send it: basic.publish, a content
//! header with delivery-mode and content-type, and a 16-byte body.

#![allow(missing_docs, clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use warren_wire::frame::decode_frame;
use warren_wire::method::BasicPublish;
use warren_wire::{BasicProperties, Frame, Method, encode_content};

fn message(buf: &mut BytesMut) {
    let publish = Method::from(BasicPublish {
        exchange: "amq.direct".into(),
        routing_key: "bench.queue".into(),
        ..Default::default()
    });
    let props = BasicProperties {
        content_type: Some("application/octet-stream".into()),
        delivery_mode: Some(1),
        ..Default::default()
    };
    encode_content(buf, 1, &publish, &props, &[0x5a; 16], 131072).unwrap();
}

fn codec(c: &mut Criterion) {
    const BATCH: usize = 1000;
    let mut wire = BytesMut::new();
    for _ in 0..BATCH {
        message(&mut wire);
    }
    let wire = wire.freeze();

    let mut group = c.benchmark_group("publish_16b");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Some(f) = decode_frame(&mut buf, 131072).unwrap() {
                black_box(&f);
                n += 1;
            }
            assert_eq!(n, BATCH * 3);
        })
    });
    let frames: Vec<Frame> = {
        let mut buf = BytesMut::from(&wire[..]);
        std::iter::from_fn(|| decode_frame(&mut buf, 131072).unwrap()).collect()
    };
    group.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            for f in &frames {
                f.encode(&mut out).unwrap();
            }
            black_box(&out);
        })
    });
    group.bench_function("decode_encode", |b| {
        let mut out = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            let mut buf = BytesMut::from(&wire[..]);
            while let Some(f) = decode_frame(&mut buf, 131072).unwrap() {
                f.encode(&mut out).unwrap();
            }
            black_box(&out);
        })
    });
    group.finish();
    black_box(Bytes::new());
}

criterion_group!(benches, codec);
criterion_main!(benches);
