use std::time::Duration;

use tokio::time::Instant;

use super::{HOLD_BYTES, MAX_HOLD, Mark, ReadHolding};

const TICK: Duration = Duration::from_micros(100);

#[test]
fn reads_that_keep_up_never_start_holding() {
    let mut holding = ReadHolding::default();
    let t0 = Instant::now();
    for i in 0..100 {
        assert_eq!(holding.after_read(false, || t0 + TICK * i), None);
    }
    assert!(!holding.holding());
    assert_eq!(holding.release_at(), None);
    assert_eq!(holding.at_release_time(t0 + MAX_HOLD * 10), None, "nothing to release");
}

#[test]
fn a_read_that_took_its_whole_quota_starts_holding_once() {
    let mut holding = ReadHolding::default();
    let t0 = Instant::now();
    assert_eq!(holding.after_read(true, || t0), Some(Mark::Hold));
    assert_eq!(holding.release_at(), Some(t0 + MAX_HOLD));
    // Already holding: more full reads change no mark, they only push the release out.
    assert_eq!(holding.after_read(true, || t0 + TICK), None);
    assert_eq!(holding.after_read(false, || t0 + TICK * 2), None);
    assert_eq!(holding.release_at(), Some(t0 + TICK * 2 + MAX_HOLD));
}

#[test]
fn holding_ends_when_nothing_was_read_for_the_longest_hold() {
    let mut holding = ReadHolding::default();
    let t0 = Instant::now();
    holding.after_read(true, || t0);
    assert_eq!(holding.at_release_time(t0 + MAX_HOLD - TICK), None, "too early: still holding");
    assert_eq!(holding.at_release_time(t0 + MAX_HOLD), Some(Mark::Release));
    assert!(!holding.holding());
    assert_eq!(holding.release_at(), None);
    assert_eq!(holding.at_release_time(t0 + MAX_HOLD * 2), None, "released once");
}

#[test]
fn a_read_before_the_release_time_keeps_holding_until_the_longest_hold_after_it() {
    let mut holding = ReadHolding::default();
    let t0 = Instant::now();
    holding.after_read(true, || t0);
    let armed = holding.release_at().expect("holding");
    holding.after_read(false, || t0 + MAX_HOLD / 2);
    // The timer armed at the start fires: a read came since, so look again later.
    assert_eq!(holding.at_release_time(armed), None);
    assert_eq!(holding.release_at(), Some(t0 + MAX_HOLD / 2 + MAX_HOLD));
    assert_eq!(holding.at_release_time(t0 + MAX_HOLD / 2 + MAX_HOLD), Some(Mark::Release));
}

#[test]
fn the_clock_is_not_read_while_reads_keep_up() {
    let mut holding = ReadHolding::default();
    assert_eq!(holding.after_read(false, || panic!("the clock was read")), None);
}

#[test]
fn a_reset_starts_over_without_holding() {
    let mut holding = ReadHolding::default();
    let t0 = Instant::now();
    holding.after_read(true, || t0);
    holding.reset();
    assert!(!holding.holding());
    assert_eq!(holding.after_read(false, || t0 + TICK), None, "a new socket starts at one byte");
    assert_eq!(holding.after_read(true, || t0 + TICK * 2), Some(Mark::Hold));
}

#[test]
fn the_marks_are_the_hold_size_and_one_byte() {
    assert_eq!(Mark::Hold.bytes(), HOLD_BYTES);
    assert_eq!(Mark::Release.bytes(), 1);
}

/// The kernel side of the rule, on a real loopback connection: with the mark held, bytes that
/// arrived leave the socket not readable; releasing the mark makes them readable (and wakes the
/// task) without more data arriving.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn releasing_the_mark_makes_bytes_already_waiting_readable() {
    use std::os::fd::AsRawFd;

    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reader = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (mut writer, _) = listener.accept().await.unwrap();
    super::set_low_water(reader.as_raw_fd(), Mark::Hold).unwrap();
    assert_eq!(low_water(&reader), HOLD_BYTES as i32);

    writer.write_all(&[7; 100]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_bytes(&reader) < 100 {
        assert!(Instant::now() < deadline, "the loopback delivers 100 bytes");
        tokio::task::yield_now().await;
    }
    assert!(!readable_now(&reader), "100 bytes under a {HOLD_BYTES}-byte mark are held");

    super::set_low_water(reader.as_raw_fd(), Mark::Release).unwrap();
    assert_eq!(low_water(&reader), 1);
    assert!(readable_now(&reader));
    tokio::time::timeout(Duration::from_secs(10), reader.readable())
        .await
        .expect("the release wakes the reader with nothing more written")
        .unwrap();
    let mut buf = [0; 200];
    assert_eq!(reader.try_read(&mut buf).unwrap(), 100);
}

#[cfg(target_os = "linux")]
fn low_water(socket: &tokio::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an open socket, and a `c_int` with its size for the answer.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, (&raw mut value).cast(), &mut len)
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value
}

/// Bytes the kernel holds for the socket (`FIONREAD`), whatever the mark.
#[cfg(target_os = "linux")]
fn waiting_bytes(socket: &tokio::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    // SAFETY: an open socket, and a `c_int` for the answer.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &raw mut value) };
    assert_eq!(rc, 0, "ioctl: {}", std::io::Error::last_os_error());
    value
}

/// Whether the kernel calls the socket readable now (`poll`, no wait): the mark applies here.
#[cfg(target_os = "linux")]
fn readable_now(socket: &tokio::net::TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = [libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: one valid `pollfd` for an open socket, and its count.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
    fds[0].revents & libc::POLLIN != 0
}
