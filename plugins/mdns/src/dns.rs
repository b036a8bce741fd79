//! Just enough DNS for DNS-SD: build a PTR query and a response with PTR and TXT records;
//! parse questions and TXT answers, following name compression with loop and length guards.
//! Untrusted input never panics: every read is bounds-checked.

const TYPE_PTR: u16 = 12;
const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;
/// mDNS: this record replaces others with the same name and type.
const CACHE_FLUSH: u16 = 0x8000;

pub(crate) struct Record {
    name: String,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: Vec<u8>,
}

impl Record {
    pub(crate) fn ptr(name: &str, target: &str, ttl: u32) -> Self {
        let mut rdata = Vec::new();
        write_name(&mut rdata, target);
        Record {
            name: name.to_owned(),
            rtype: TYPE_PTR,
            class: CLASS_IN,
            ttl,
            rdata,
        }
    }

    pub(crate) fn txt(name: &str, strings: &[String], ttl: u32) -> Self {
        let mut rdata = Vec::new();
        for s in strings {
            let bytes = &s.as_bytes()[..s.len().min(255)];
            rdata.push(bytes.len() as u8);
            rdata.extend_from_slice(bytes);
        }
        Record {
            name: name.to_owned(),
            rtype: TYPE_TXT,
            class: CLASS_IN | CACHE_FLUSH,
            ttl,
            rdata,
        }
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn header(out: &mut Vec<u8>, flags: u16, questions: u16, answers: u16) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&questions.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

pub(crate) fn query(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    header(&mut out, 0, 1, 0);
    write_name(&mut out, name);
    out.extend_from_slice(&TYPE_PTR.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

pub(crate) fn response(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // QR (response) + AA (authoritative), as mDNS responses are.
    header(&mut out, 0x8400, 0, records.len() as u16);
    for r in records {
        write_name(&mut out, &r.name);
        out.extend_from_slice(&r.rtype.to_be_bytes());
        out.extend_from_slice(&r.class.to_be_bytes());
        out.extend_from_slice(&r.ttl.to_be_bytes());
        out.extend_from_slice(&(r.rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&r.rdata);
    }
    out
}

pub(crate) struct Txt {
    pub(crate) ttl: u32,
    pub(crate) strings: Vec<String>,
}

struct Answer {
    name: String,
    rtype: u16,
    ttl: u32,
    rdata_start: usize,
    rdata_len: usize,
}

pub(crate) struct Message<'a> {
    packet: &'a [u8],
    pub(crate) is_response: bool,
    pub(crate) questions: Vec<String>,
    answers: Vec<Answer>,
}

impl Message<'_> {
    /// TXT records of instances of `service` (names ending in `.service`).
    pub(crate) fn txt_records(&self, service: &str) -> Vec<Txt> {
        let suffix = format!(".{service}").to_ascii_lowercase();
        self.answers
            .iter()
            .filter(|a| a.rtype == TYPE_TXT && a.name.to_ascii_lowercase().ends_with(&suffix))
            .filter_map(|a| {
                let data = self
                    .packet
                    .get(a.rdata_start..a.rdata_start + a.rdata_len)?;
                let mut strings = Vec::new();
                let mut i = 0;
                while i < data.len() {
                    let len = data[i] as usize;
                    let s = data.get(i + 1..i + 1 + len)?;
                    strings.push(String::from_utf8_lossy(s).into_owned());
                    i += 1 + len;
                }
                Some(Txt {
                    ttl: a.ttl,
                    strings,
                })
            })
            .collect()
    }
}

#[derive(Debug)]
pub(crate) struct Malformed;

struct Reader<'a> {
    packet: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.packet.get(self.pos..self.pos + 2).ok_or(Malformed)?;
        self.pos += 2;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.packet.get(self.pos..self.pos + 4).ok_or(Malformed)?;
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a possibly compressed name, leaving the position after it.
    fn name(&mut self) -> Result<String, Malformed> {
        let mut labels: Vec<String> = Vec::new();
        let mut pos = self.pos;
        let mut jumped = false;
        let mut jumps = 0;
        let mut total = 0;
        loop {
            let len = *self.packet.get(pos).ok_or(Malformed)? as usize;
            if len == 0 {
                if !jumped {
                    self.pos = pos + 1;
                }
                break;
            }
            if len & 0xC0 == 0xC0 {
                let low = *self.packet.get(pos + 1).ok_or(Malformed)? as usize;
                if !jumped {
                    self.pos = pos + 2;
                }
                jumped = true;
                jumps += 1;
                if jumps > 32 {
                    return Err(Malformed);
                }
                pos = ((len & 0x3F) << 8) | low;
                continue;
            }
            if len > 63 {
                return Err(Malformed);
            }
            let label = self.packet.get(pos + 1..pos + 1 + len).ok_or(Malformed)?;
            total += len + 1;
            if total > 255 {
                return Err(Malformed);
            }
            labels.push(String::from_utf8_lossy(label).into_owned());
            pos += 1 + len;
        }
        Ok(labels.join("."))
    }
}

pub(crate) fn parse(packet: &[u8]) -> Result<Message<'_>, Malformed> {
    let mut r = Reader { packet, pos: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    if counts.iter().map(|&c| c as usize).sum::<usize>() > 256 {
        return Err(Malformed);
    }
    let mut questions = Vec::new();
    for _ in 0..counts[0] {
        let name = r.name()?;
        let _qtype = r.u16()?;
        let _qclass = r.u16()?;
        questions.push(name);
    }
    let mut answers = Vec::new();
    for _ in 0..(counts[1] + counts[2] + counts[3]) {
        let name = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let ttl = r.u32()?;
        let rdata_len = r.u16()? as usize;
        let rdata_start = r.pos;
        if packet.len() < rdata_start + rdata_len {
            return Err(Malformed);
        }
        r.pos += rdata_len;
        answers.push(Answer {
            name,
            rtype,
            ttl,
            rdata_start,
            rdata_len,
        });
    }
    Ok(Message {
        packet,
        is_response: flags & 0x8000 != 0,
        questions,
        answers,
    })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(crate) fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3F) as usize] as char);
        }
    }
    out
}

pub(crate) fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
