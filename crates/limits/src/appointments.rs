//! The herd gate's waiting list: when to tell a refused client to come back.
//!
//! A `Retry-After` drawn from a fixed window ignores how soon a slot frees:
//! at the end of a herd the last refused clients return long after the link
//! went idle, and at its start most return long before anything has
//! finished. The class finishes a whole download about every
//! `body_len / available`, so successive refusals get successive
//! appointments that far apart, from when the first slot is expected to
//! free: a virtual queue whose tail moves one spacing later per refusal and
//! falls back to "now" once everyone booked has had their turn.
//!
//! A client refused again keeps its place. Back before its appointment, it
//! is told the same time again. Back after it (its slot came late:
//! transfers that started together finish together, so slots free in
//! bunches rather than evenly), it goes to the front, not the back: overdue
//! clients get appointments from a second queue that starts at the first
//! slot and is spaced the same way, so they neither wait behind newcomers
//! nor all return in the same instant. (Moving the newcomers' tail later
//! for every overdue client instead was tried in simulation: bunched slots
//! make clients overdue often, and the tail ran away until slots idled.)
//!
//! Who was told what is remembered in a map bounded to [`MAX_BOOKED`]
//! clients and forgotten once a client is admitted or far past its
//! appointment.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use super::ClientKey;

/// Most clients whose appointments are remembered (~64 bytes each). Beyond
/// it a refused client still gets its place in the queue, but is not
/// recognised when it comes back.
pub const MAX_BOOKED: usize = 65_536;

/// Pruning a full map is a scan; do it at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How the queue moves, estimated by the gate for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Until the first slot is expected to free.
    pub first_slot: Duration,
    /// Between successive slots: the time the class needs to send the body.
    pub spacing: Duration,
}

/// Appointments handed out and the ends of the two queues.
#[derive(Debug)]
pub struct Appointments {
    /// The next newcomer's slot, unless the first free slot is later.
    tail: Option<Instant>,
    /// The next overdue client's slot, likewise.
    front: Option<Instant>,
    /// Each waiting client's appointment (jitter included).
    booked: HashMap<ClientKey, Instant>,
    /// Appointments this far in the past are forgotten.
    forget_after: Duration,
    last_prune: Option<Instant>,
}

impl Appointments {
    /// An empty queue whose clients are forgotten `forget_after` past their
    /// appointment.
    pub fn new(forget_after: Duration) -> Self {
        Self {
            tail: None,
            front: None,
            booked: HashMap::new(),
            forget_after,
            last_prune: None,
        }
    }

    /// Changes how long overdue clients are remembered (config reload).
    pub fn set_forget_after(&mut self, forget_after: Duration) {
        self.forget_after = forget_after;
    }

    /// The appointment of `client`, refused at `now`: its old one while that
    /// is still ahead; the next slot of the overdue queue when it is past;
    /// otherwise the next place at the tail. `jitter` is added to new
    /// appointments so clients booked for neighbouring slots do not arrive
    /// in the same instant.
    pub fn book(
        &mut self,
        client: ClientKey,
        now: Instant,
        pace: Pace,
        jitter: Duration,
    ) -> Instant {
        let previous = self.booked.get(&client).copied();
        if let Some(at) = previous
            && at > now
        {
            return at;
        }
        let first = now + pace.first_slot;
        let overdue = previous.is_some_and(|at| at + self.forget_after >= now);
        let queue = if overdue {
            &mut self.front
        } else {
            &mut self.tail
        };
        let slot = queue.map_or(first, |end| end.max(first));
        *queue = Some(slot + pace.spacing);
        let at = slot + jitter;
        self.remember(client, at, now);
        at
    }

    fn remember(&mut self, client: ClientKey, at: Instant, now: Instant) {
        if self.booked.len() >= MAX_BOOKED
            && !self.booked.contains_key(&client)
            && self.last_prune.is_none_or(|last| now >= last + PRUNE_EVERY)
        {
            self.prune(now);
        }
        if self.booked.len() < MAX_BOOKED || self.booked.contains_key(&client) {
            self.booked.insert(client, at);
        }
    }

    /// `client` got a slot: it no longer waits.
    pub fn admitted(&mut self, client: &ClientKey) {
        self.booked.remove(client);
    }

    /// Forgets clients far past their appointment (they went elsewhere).
    pub fn prune(&mut self, now: Instant) {
        let forget_after = self.forget_after;
        self.booked.retain(|_, at| *at + forget_after >= now);
        self.last_prune = Some(now);
    }

    /// Clients whose appointment is still ahead.
    pub fn waiting(&self, now: Instant) -> usize {
        self.booked.values().filter(|at| **at > now).count()
    }

    /// Clients remembered (waiting or overdue).
    pub fn len(&self) -> usize {
        self.booked.len()
    }

    /// Whether nobody is remembered.
    pub fn is_empty(&self) -> bool {
        self.booked.is_empty()
    }

    /// How far ahead the end of the queue is (0: nobody waits).
    pub fn horizon(&self, now: Instant) -> Duration {
        self.tail
            .max(self.front)
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    use cvdmirror_exchange::ClientPrefixes;

    const SECOND: Duration = Duration::from_secs(1);
    const PACE: Pace = Pace {
        first_slot: Duration::from_secs(2),
        spacing: Duration::from_secs(5),
    };

    fn client(n: u32) -> ClientKey {
        ClientPrefixes::default().key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[tokio::test(start_paused = true)]
    async fn successive_refusals_get_successive_slots() {
        let now = Instant::now();
        let mut q = Appointments::new(Duration::from_secs(900));
        let at: Vec<Duration> = (0..4)
            .map(|n| q.book(client(n), now, PACE, Duration::ZERO) - now)
            .collect();
        assert_eq!(at, [2, 7, 12, 17].map(Duration::from_secs));
        assert_eq!(q.horizon(now), Duration::from_secs(22));
        assert_eq!(q.waiting(now), 4);
        // Jitter moves the client, not the queue.
        let fifth = q.book(client(4), now, PACE, SECOND);
        assert_eq!(fifth - now, Duration::from_secs(23));
        assert_eq!(q.horizon(now), Duration::from_secs(27));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_refused_again_keeps_its_place() {
        let t0 = Instant::now();
        let mut q = Appointments::new(Duration::from_secs(900));
        for n in 0..3 {
            q.book(client(n), t0, PACE, Duration::ZERO);
        }
        // Back early: the same appointment, the queue unchanged.
        let again = q.book(client(1), t0 + SECOND, PACE, Duration::ZERO);
        assert_eq!(again - t0, Duration::from_secs(7));
        assert_eq!(q.horizon(t0), Duration::from_secs(17));
        // Back after it, still no slot: the first slot, not behind client 2.
        let late = t0 + Duration::from_secs(8);
        let next = q.book(client(1), late, PACE, Duration::ZERO);
        assert_eq!(next - late, PACE.first_slot);
        // Client 0, overdue too, comes one spacing after it.
        let zero = q.book(client(0), late, PACE, Duration::ZERO);
        assert_eq!(zero - late, PACE.first_slot + PACE.spacing);
        // Newcomers still queue at the tail.
        let newcomer = q.book(client(9), late, PACE, Duration::ZERO);
        assert_eq!(newcomer - t0, Duration::from_secs(17));
        // Admitted: forgotten, so a later refusal is a new place at the tail.
        q.admitted(&client(1));
        assert_eq!(q.len(), 3);
        let back = q.book(client(1), late, PACE, Duration::ZERO);
        assert_eq!(back - t0, Duration::from_secs(22));
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_empties_as_time_passes() {
        let t0 = Instant::now();
        let mut q = Appointments::new(Duration::from_secs(60));
        for n in 0..10 {
            q.book(client(n), t0, PACE, Duration::ZERO);
        }
        let later = t0 + Duration::from_secs(100);
        assert_eq!(q.horizon(later), Duration::ZERO);
        assert_eq!(q.waiting(later), 0);
        // A newcomer waits only for the first slot.
        assert_eq!(
            q.book(client(99), later, PACE, Duration::ZERO) - later,
            PACE.first_slot
        );
        // A client long past its appointment is a newcomer too.
        let much_later = t0 + Duration::from_secs(200);
        assert_eq!(
            q.book(client(0), much_later, PACE, Duration::ZERO) - much_later,
            PACE.first_slot
        );
        assert_eq!(q.horizon(much_later), PACE.first_slot + PACE.spacing);
        q.prune(much_later);
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_book_is_bounded() {
        let t0 = Instant::now();
        let tiny = Pace {
            first_slot: Duration::ZERO,
            spacing: Duration::from_millis(1),
        };
        let mut q = Appointments::new(Duration::from_secs(10));
        for n in 0..MAX_BOOKED as u32 + 10 {
            q.book(client(n), t0, tiny, Duration::ZERO);
        }
        assert_eq!(q.len(), MAX_BOOKED);
        // Everyone still got a place in the queue.
        assert_eq!(q.horizon(t0), Duration::from_millis(MAX_BOOKED as u64 + 10));
        // Once the early ones are long overdue, a full book makes room.
        let later = t0 + Duration::from_secs(200);
        q.book(client(10_000_000), later, tiny, Duration::ZERO);
        assert_eq!(q.len(), 1);
    }
}
