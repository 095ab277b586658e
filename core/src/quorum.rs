//! Quorum arithmetic: majorities of a fixed voter set, as a tiny pure module tested from tables.

/// What a tally of votes says so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Neither a majority of yes nor enough no votes to rule one out.
    Pending,
    /// A majority of the voters said yes.
    Won,
    /// So many said no that a majority of yes is impossible.
    Lost,
}

/// The smallest number of voters that is more than half of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Decides a vote among `voters` voters with `yes` and `no` distinct answers so far.
pub fn tally(voters: usize, yes: usize, no: usize) -> Decision {
    let needed = majority(voters);
    if yes >= needed {
        Decision::Won
    } else if no > voters.saturating_sub(needed) {
        Decision::Lost
    } else {
        Decision::Pending
    }
}

/// Whether `hit` voters of a roster of `voters` meet every majority of it.
pub fn meets_every_majority(voters: usize, hit: usize) -> bool {
    hit + majority(voters) > voters
}

/// Decides a Prepare among `voters` voters: `trusted` promises (from voters a majority vouches
/// for), `untrusted` ones (from voters it does not: their content is not used) and `no`
/// refusals. Won once the promises are a majority and the trusted ones alone meet every set
/// of voters that can hold a chosen value: every majority of the roster, and, if it is not
/// swept yet, every majority of the roster before it (`before`: its size, and how many of the
/// trusted voters it lists), where a value chosen there may sit on fewer voters of this one.
/// Under a swept roster that leaves room for one untrusted voter when the count is even (its
/// own removal may need its vote while another voter is down), for none when it is odd.
/// Lost once no majority can answer, or everyone answered and it is not won.
pub fn tally_promises(voters: usize, trusted: usize, untrusted: usize, no: usize, before: Option<(usize, usize)>) -> Decision {
    let needed = majority(voters);
    let meets = meets_every_majority(voters, trusted) && before.is_none_or(|(size, hit)| meets_every_majority(size, hit));
    if trusted + untrusted >= needed && meets {
        Decision::Won
    } else if no > voters.saturating_sub(needed) || trusted + untrusted + no >= voters {
        Decision::Lost
    } else {
        Decision::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        for (voters, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            assert_eq!(majority(voters), want, "majority of {voters}");
        }
    }

    #[test]
    fn tallies() {
        use Decision::*;
        let table = [
            // voters, yes, no, decision
            (1, 0, 0, Pending),
            (1, 1, 0, Won),
            (1, 0, 1, Lost),
            (3, 1, 0, Pending),
            (3, 2, 0, Won),
            (3, 1, 1, Pending),
            (3, 0, 2, Lost),
            (3, 1, 2, Lost),
            (4, 2, 0, Pending),
            (4, 2, 1, Pending),
            (4, 2, 2, Lost),
            (4, 3, 1, Won),
            (5, 3, 2, Won),
            (5, 2, 2, Pending),
            (5, 0, 3, Lost),
        ];
        for (voters, yes, no, want) in table {
            assert_eq!(tally(voters, yes, no), want, "{yes} yes, {no} no of {voters}");
        }
    }

    #[test]
    fn promise_tallies() {
        use Decision::*;
        let table = [
            // voters, trusted, untrusted, no, decision (swept)
            (3, 2, 0, 0, Won),
            (3, 1, 1, 0, Pending),
            (3, 1, 1, 1, Lost),
            (3, 1, 2, 0, Lost),
            (4, 2, 1, 0, Won),
            (4, 2, 0, 0, Pending),
            (4, 1, 2, 0, Pending),
            (4, 1, 3, 0, Lost),
            (4, 1, 2, 1, Lost),
            (5, 2, 1, 0, Pending),
            (5, 3, 0, 0, Won),
            (5, 2, 3, 0, Lost),
            (6, 3, 1, 0, Won),
            (6, 3, 0, 0, Pending),
            (6, 2, 2, 0, Pending),
            (1, 1, 0, 0, Won),
            (1, 0, 1, 0, Lost),
        ];
        for (voters, trusted, untrusted, no, want) in table {
            assert_eq!(tally_promises(voters, trusted, untrusted, no, None), want, "{trusted} trusted, {untrusted} untrusted, {no} no of {voters}");
        }
        // Unswept: five voters before, four now (one removed); the two trusted meet every
        // majority of the four but not of the five (simulator seed 1171 of roster-churn).
        assert_eq!(tally_promises(4, 2, 2, 0, Some((5, 2))), Lost);
        assert_eq!(tally_promises(4, 2, 1, 0, Some((5, 2))), Pending);
        assert_eq!(tally_promises(4, 3, 0, 0, Some((5, 3))), Won);
        // Three before, four now (one added): two trusted of the three old voters meet both.
        assert_eq!(tally_promises(4, 2, 1, 0, Some((3, 2))), Won);
        assert_eq!(tally_promises(4, 2, 1, 0, Some((3, 1))), Pending);
        // Whenever it is won, every majority meets the trusted promises in more voters than
        // there are untrusted ones.
        for voters in 1..=9 {
            for trusted in 0..=voters {
                for untrusted in 0..=(voters - trusted) {
                    if tally_promises(voters, trusted, untrusted, 0, None) == Won {
                        let quorum = trusted + untrusted;
                        assert!(majority(voters) + quorum - voters > untrusted, "{voters}: {trusted}+{untrusted}");
                    }
                }
            }
        }
    }
}
