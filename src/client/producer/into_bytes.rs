//! [`IntoBytes`]: what a [`ProducerRecord`](super::ProducerRecord) takes as
//! a key, a value or a header value.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// Converts a key, value or header value into the [`Bytes`](bytes::Bytes)
/// a [`ProducerRecord`](super::ProducerRecord) holds.
///
/// Borrowed data of any lifetime is copied (`&str`, `&[u8]`, `&String`,
/// `&Vec<u8>`, `&[u8; N]`, `[u8; N]`, a borrowed `Cow`); owned buffers are
/// taken over without copying (`Vec<u8>`, `String`, `Box<[u8]>`, an owned
/// `Cow`); `Bytes`, `&Bytes` and `BytesMut` are shared or frozen, never
/// copied.
///
/// `Into<Bytes>` is not used because it takes only `'static` borrows:
/// building a record from a function's `&str` parameters would fail with
/// "borrowed data escapes outside of function" (E0521).
///
/// ```
/// use logbus::ProducerRecord;
///
/// // Borrowed arguments of any lifetime: copied into the record.
/// fn order_event(topic: &str, id: &str, payload: &[u8]) -> ProducerRecord {
///     ProducerRecord::new(topic, payload).with_key(id)
/// }
/// let record = order_event("orders", "order-1", b"created");
/// assert_eq!(record.key().map(|k| &k[..]), Some(&b"order-1"[..]));
/// assert_eq!(record.value().map(|v| &v[..]), Some(&b"created"[..]));
///
/// // Owned buffers and `Bytes` are not copied.
/// let value = logbus::Bytes::from_static(b"paid");
/// let record = ProducerRecord::new(String::from("orders"), &value).with_key(vec![1, 2]);
/// assert_eq!(record.value(), Some(&value));
/// ```
///
/// A type of your own can implement it, to be used as a key or value directly:
///
/// ```
/// use logbus::{IntoBytes, ProducerRecord};
///
/// struct OrderId(u64);
///
/// impl IntoBytes for OrderId {
///     fn into_bytes(self) -> logbus::Bytes {
///         logbus::Bytes::copy_from_slice(&self.0.to_be_bytes())
///     }
/// }
///
/// let record = ProducerRecord::new("orders", "created").with_key(OrderId(7));
/// assert_eq!(record.key().map(|k| k.len()), Some(8));
/// ```
pub trait IntoBytes {
    /// The bytes, copied only if `self` borrows them.
    fn into_bytes(self) -> Bytes;
}

impl IntoBytes for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl IntoBytes for &Bytes {
    /// A new reference to the same buffer (no copy).
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl IntoBytes for BytesMut {
    fn into_bytes(self) -> Bytes {
        self.freeze()
    }
}

impl IntoBytes for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for Box<[u8]> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for String {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl<const N: usize> IntoBytes for [u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(&self)
    }
}

impl IntoBytes for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> IntoBytes for &[u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoBytes for &Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoBytes for &str {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for &String {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for Cow<'_, [u8]> {
    /// Copies a borrowed slice; takes an owned vector over.
    fn into_bytes(self) -> Bytes {
        match self {
            Cow::Borrowed(b) => Bytes::copy_from_slice(b),
            Cow::Owned(v) => Bytes::from(v),
        }
    }
}

impl IntoBytes for Cow<'_, str> {
    /// Copies a borrowed string; takes an owned one over.
    fn into_bytes(self) -> Bytes {
        match self {
            Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_buffers_and_bytes_are_not_copied() {
        let v = vec![1_u8, 2, 3];
        let ptr = v.as_ptr();
        assert_eq!(v.into_bytes().as_ptr(), ptr);
        let s = String::from("abc");
        let ptr = s.as_ptr();
        assert_eq!(IntoBytes::into_bytes(s).as_ptr(), ptr);
        let b = Bytes::from(vec![4_u8; 10]);
        assert_eq!((&b).into_bytes().as_ptr(), b.as_ptr());
        let ptr = b.as_ptr();
        assert_eq!(b.into_bytes().as_ptr(), ptr);
        let owned: Cow<'_, [u8]> = Cow::Owned(vec![5; 4]);
        let ptr = owned.as_ptr();
        assert_eq!(owned.into_bytes().as_ptr(), ptr);
    }

    #[test]
    fn borrowed_data_is_copied_whole() {
        let text = String::from("key");
        assert_eq!(text.as_str().into_bytes(), &b"key"[..]);
        assert_eq!((&text).into_bytes(), &b"key"[..]);
        let data = vec![9_u8, 8];
        assert_eq!((&data).into_bytes(), &[9_u8, 8][..]);
        assert_eq!(data.as_slice().into_bytes(), &[9_u8, 8][..]);
        assert_eq!((&[1_u8, 2, 3]).into_bytes(), &[1_u8, 2, 3][..]);
        assert_eq!([7_u8; 2].into_bytes(), &[7_u8, 7][..]);
        assert_eq!(Cow::Borrowed("x").into_bytes(), &b"x"[..]);
        assert_eq!(Cow::<str>::Owned("y".into()).into_bytes(), &b"y"[..]);
        assert_eq!(Cow::Borrowed(&b"z"[..]).into_bytes(), &b"z"[..]);
        assert_eq!(Box::<[u8]>::from(&b"w"[..]).into_bytes(), &b"w"[..]);
        assert_eq!(BytesMut::from(&b"m"[..]).into_bytes(), &b"m"[..]);
    }
}
