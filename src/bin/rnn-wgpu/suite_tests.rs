//! The suites' row lists, filters, topology and `--rows` parsing.

use super::*;

fn count(s: &Suite, cell: Cell, mode: Mode) -> usize {
    s.rows
        .iter()
        .filter(|r| r.cell == cell && r.mode == mode)
        .count()
}

#[test]
fn deepbench_has_every_row_once() {
    let s = suite(SuiteName::Deepbench);
    assert_eq!(
        (
            count(&s, Cell::Lstm, Mode::Inference),
            count(&s, Cell::Lstm, Mode::Train)
        ),
        (15, 22)
    );
    assert_eq!(
        (
            count(&s, Cell::Gru, Mode::Inference),
            count(&s, Cell::Gru, Mode::Train)
        ),
        (54, 19)
    );
    // The two `device` vanilla rows are inference rows.
    assert_eq!(
        (
            count(&s, Cell::Rnn, Mode::Inference),
            count(&s, Cell::Rnn, Mode::Train)
        ),
        (2, 12)
    );
    // The `device` LSTM row repeats an inference row.
    assert!(s.left_out.unwrap().contains("1 duplicate"));
    // Grouped by cell (LSTM first), then by mode (inference first).
    let keys: Vec<(Cell, Mode)> = s.rows.iter().map(|r| (r.cell, r.mode)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys[0], (Cell::Lstm, Mode::Inference));
}

#[test]
fn lite_keeps_small_gru_and_rnn_rows() {
    let s = suite(SuiteName::Lite);
    assert!(s.rows.iter().all(in_lite));
    let small: Vec<(Cell, Mode, usize, usize, usize)> = s
        .rows
        .iter()
        .filter(|r| r.cell != Cell::Lstm)
        .map(|r| (r.cell, r.mode, r.hidden, r.batch, r.steps))
        .collect();
    // Exactly the rows LITE_ABOUT names, in CSV order.
    let (gru, rnn, inf, train) = (Cell::Gru, Cell::Rnn, Mode::Inference, Mode::Train);
    assert_eq!(
        small,
        [
            (gru, inf, 1536, 1, 187),
            (gru, inf, 512, 1, 1),
            (gru, inf, 512, 2, 1),
            (gru, inf, 512, 4, 1),
            (gru, train, 512, 32, 1),
            (rnn, inf, 32, 1, 672),
            (rnn, inf, 64, 1, 96),
        ]
    );
    assert!(s.about.is_some());
    assert!(s.left_out.unwrap().contains("beyond lite"));
}

#[test]
fn pass_flops_match_the_library() {
    for cell in Cell::ALL {
        for mode in [Mode::Inference, Mode::Train, Mode::Stream] {
            for layers in 1..=3 {
                for bidirectional in [false, true] {
                    let row = Row::plain(cell, mode, 48, 3, 7).stacked(layers, bidirectional);
                    let cfg = crate::measure::config(&row).unwrap();
                    assert_eq!(cfg.num_layers(), layers);
                    assert_eq!(cfg.num_directions(), row.directions());
                    let passes = if mode == Mode::Train { 3.0 } else { 1.0 };
                    assert_eq!(
                        row.pass_flops(),
                        passes * cfg.forward_flops(3, 7),
                        "{row:?}"
                    );
                }
            }
        }
    }
    // One layer: the DeepBench count 2*G*B*H*(I+H)*T.
    let one = Row::plain(Cell::Lstm, Mode::Inference, 48, 3, 7);
    assert_eq!(one.pass_flops(), 8.0 * 3.0 * 48.0 * 96.0 * 7.0);
}

#[test]
fn lite_lstm_rows_are_unchanged() {
    // Every LSTM inference row, and the LSTM train rows with H <= 1024 (all have T <= 150).
    let lite = suite(SuiteName::Lite);
    let deep = suite(SuiteName::Deepbench);
    let pick = |s: &Suite, mode: Mode, max_h: usize| -> Vec<Row> {
        s.rows
            .iter()
            .filter(|r| r.cell == Cell::Lstm && r.mode == mode && r.hidden <= max_h)
            .cloned()
            .collect()
    };
    assert_eq!(
        pick(&lite, Mode::Train, usize::MAX),
        pick(&deep, Mode::Train, 1024)
    );
    assert_eq!(pick(&lite, Mode::Train, usize::MAX).len(), 11);
    assert_eq!(
        pick(&lite, Mode::Inference, usize::MAX),
        pick(&deep, Mode::Inference, usize::MAX)
    );
}

#[test]
fn quick_has_small_rows_of_every_cell() {
    let s = suite(SuiteName::Quick);
    assert_eq!(s.rows.len(), QUICK_ROWS.len());
    for cell in Cell::ALL {
        assert!(count(&s, cell, Mode::Inference) >= 1, "{cell:?}");
        assert!(count(&s, cell, Mode::Train) >= 1, "{cell:?}");
    }
    assert!(
        s.rows
            .iter()
            .filter(|r| r.mode == Mode::Train)
            .all(|r| r.hidden <= 128)
    );
    // 2-layer bidirectional LSTM and GRU rows, H=64 B=16 T=25, inference and train.
    for cell in [Cell::Lstm, Cell::Gru] {
        for mode in [Mode::Inference, Mode::Train] {
            let want = Row::plain(cell, mode, 64, 16, 25).stacked(2, true);
            assert!(s.rows.contains(&want), "{want:?}");
        }
    }
    // Streaming rows: B = 1, forward direction (a session cannot run a reverse one), at
    // least one stacked LSTM and GRU.
    let stream: Vec<&Row> = s.rows.iter().filter(|r| r.mode == Mode::Stream).collect();
    assert!(stream.iter().all(|r| r.batch == 1 && !r.bidirectional));
    for cell in [Cell::Lstm, Cell::Gru] {
        assert!(stream.iter().any(|r| r.cell == cell && r.layers == 2));
    }
    // No row appears twice.
    for (k, r) in s.rows.iter().enumerate() {
        assert!(!s.rows[..k].contains(r), "{r:?}");
    }
}

#[test]
fn mode_filter_keeps_one_mode() {
    let s = filter_modes(suite(SuiteName::Quick), ModeFilter::Train);
    assert!(s.rows.iter().all(|r| r.mode == Mode::Train));
    assert_eq!(s.rows.len(), 6);
    assert!(s.left_out.unwrap().contains("--mode train"));
    let s = filter_modes(suite(SuiteName::Quick), ModeFilter::Stream);
    assert!(s.rows.iter().all(|r| r.mode == Mode::Stream));
    assert_eq!(s.rows.len(), 3);
    let s = filter_modes(suite(SuiteName::Quick), ModeFilter::Both);
    assert_eq!(s.rows.len(), QUICK_ROWS.len() - 3);
    assert!(s.rows.iter().all(|r| r.mode != Mode::Stream));
    assert!(s.left_out.unwrap().contains("--mode both"));
    let s = filter_modes(suite(SuiteName::Quick), ModeFilter::All);
    assert_eq!(s.rows.len(), QUICK_ROWS.len());
    assert!(s.left_out.is_none());
}

#[test]
fn cell_filter_keeps_one_cell() {
    let s = filter_cells(suite(SuiteName::Quick), CellFilter::Gru);
    assert!(s.rows.iter().all(|r| r.cell == Cell::Gru));
    assert_eq!(s.rows.len(), 5);
    assert!(s.left_out.unwrap().contains("--cell gru"));
    let s = filter_cells(suite(SuiteName::Quick), CellFilter::All);
    assert_eq!(s.rows.len(), QUICK_ROWS.len());
    assert!(s.left_out.is_none());
    let s = filter_modes(
        filter_cells(suite(SuiteName::Quick), CellFilter::Rnn),
        ModeFilter::Inference,
    );
    assert_eq!(s.rows.len(), 1);
    let note = s.left_out.unwrap();
    assert!(note.contains("--cell rnn") && note.contains("--mode inference"));
}

#[test]
fn topology_applies_to_every_row() {
    // Nothing given: rows keep their own topology.
    let s = apply_topology(suite(SuiteName::Quick), None, false);
    assert_eq!(s.rows, QUICK_ROWS);
    assert!(s.left_out.is_none());

    let s = apply_topology(suite(SuiteName::Quick), Some(2), true);
    assert!(s.rows.iter().all(|r| r.layers == 2 && r.bidirectional));
    // The one-layer LSTM and GRU rows at H=64 B=16 T=25 become the 2-layer
    // bidirectional rows already in the suite.
    assert_eq!(s.rows.len(), QUICK_ROWS.len() - 4);
    assert!(s.left_out.unwrap().contains("--layers 2 --bidirectional"));

    let s = apply_topology(suite(SuiteName::Lite), Some(3), false);
    assert!(s.rows.iter().all(|r| r.layers == 3 && !r.bidirectional));
    assert_eq!(s.rows.len(), suite(SuiteName::Lite).rows.len());

    let custom = parse_rows("32,2,5", CellFilter::Gru.cells(), ModeFilter::All.modes());
    let s = apply_topology(custom.unwrap(), None, true);
    let got: Vec<(Mode, usize, bool)> = s
        .rows
        .iter()
        .map(|r| (r.mode, r.layers, r.bidirectional))
        .collect();
    assert_eq!(
        got,
        [
            (Mode::Inference, 1, true),
            (Mode::Train, 1, true),
            (Mode::Stream, 1, true)
        ]
    );
}

#[test]
fn custom_rows_parse() {
    let lstm = CellFilter::Lstm.cells();
    let s = parse_rows("64,2,3; 8,1,1", lstm, ModeFilter::Inference.modes()).unwrap();
    assert_eq!(s.rows.len(), 2);
    assert_eq!(
        (
            s.rows[0].cell,
            s.rows[0].hidden,
            s.rows[0].batch,
            s.rows[0].steps
        ),
        (Cell::Lstm, 64, 2, 3)
    );
    let both = parse_rows("64,2,3", lstm, ModeFilter::Both.modes()).unwrap();
    let modes: Vec<Mode> = both.rows.iter().map(|r| r.mode).collect();
    assert_eq!(modes, [Mode::Inference, Mode::Train]);
    let all = parse_rows("64,2,3", lstm, ModeFilter::All.modes()).unwrap();
    let modes: Vec<Mode> = all.rows.iter().map(|r| r.mode).collect();
    assert_eq!(modes, [Mode::Inference, Mode::Train, Mode::Stream]);
    assert!(all.rows.iter().all(|r| r.layers == 1 && !r.bidirectional));
    let all = parse_rows("64,2,3", CellFilter::All.cells(), &[Mode::Train]).unwrap();
    let cells: Vec<Cell> = all.rows.iter().map(|r| r.cell).collect();
    assert_eq!(cells, Cell::ALL);
    assert!(parse_rows("64,2", lstm, &[Mode::Inference]).is_err());
    assert!(parse_rows("64,0,3", lstm, &[Mode::Inference]).is_err());
    assert!(parse_rows(" ; ", lstm, &[Mode::Inference]).is_err());
}
