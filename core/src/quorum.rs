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
}
