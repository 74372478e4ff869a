/**
 * A small SVG timeline of a run: one bar per step over time, one row per lane of steps
 * that overlapped (steps that ran one after another share a lane).
 */

import * as React from 'react';

import { IStep } from './api';
import { formatDuration, parseTime, stepTimes } from './format';
import { progressText, showsHeartbeat } from './heartbeat';

const WIDTH = 1000; // viewBox units; the SVG is as wide as the panel
const LANE_HEIGHT = 10;
const LANE_GAP = 3;
const MAX_LANES = 16;

interface IBar {
  step: IStep;
  start: number;
  end: number;
  lane: number;
}

/** Bars in lanes: each step goes to the first lane that is free when it starts. */
export function layoutLanes(steps: IStep[], now: number): IBar[] {
  const timed = steps
    .map(step => {
      const start = parseTime(step.started_at);
      const ended = parseTime(step.ended_at);
      return start === null ? null : { step, start, end: Math.max(start, ended ?? now) };
    })
    .filter((b): b is Omit<IBar, 'lane'> => b !== null)
    .sort((a, b) => a.start - b.start || a.step.seq - b.step.seq);
  const laneEnds: number[] = [];
  return timed.map(bar => {
    let lane = laneEnds.findIndex(end => end <= bar.start);
    if (lane < 0) {
      lane = laneEnds.length;
      laneEnds.push(bar.end);
    } else {
      laneEnds[lane] = bar.end;
    }
    return { ...bar, lane };
  });
}

export function Timeline(props: {
  steps: IStep[];
  runStart: string | null;
  runEnd: string | null;
  now: number;
}): JSX.Element | null {
  // An ended run's clock stopped at its end: a step it left in flight (abandoned) is drawn
  // up to there, and the axis stays put however long the run is looked at.
  const ended = parseTime(props.runEnd);
  const now = ended ?? props.now;
  const bars = layoutLanes(props.steps, now);
  if (bars.length === 0) {
    return null;
  }
  const t0 = Math.min(parseTime(props.runStart) ?? bars[0].start, ...bars.map(b => b.start));
  const t1 = Math.max(now, ...bars.map(b => b.end));
  const span = Math.max(t1 - t0, 1);
  const lanes = Math.max(...bars.map(b => b.lane)) + 1;
  const shownLanes = Math.min(lanes, MAX_LANES);
  const height = shownLanes * (LANE_HEIGHT + LANE_GAP) - LANE_GAP;
  const x = (t: number) => ((t - t0) / span) * WIDTH;
  return (
    <div className="dnb-timeline-box">
      <svg
        className="dnb-timeline"
        viewBox={`0 0 ${WIDTH} ${height}`}
        preserveAspectRatio="none"
        width="100%"
        height={height}
        role="img"
        aria-label={`Timeline: ${bars.length} steps in ${lanes} ${lanes === 1 ? 'lane' : 'lanes'}`}
      >
        {bars
          .filter(b => b.lane < MAX_LANES)
          .map(b => (
            <rect
              key={b.step.seq}
              className={`dnb-bar dnb-status-${b.step.status}`}
              data-seq={b.step.seq}
              x={x(b.start)}
              y={b.lane * (LANE_HEIGHT + LANE_GAP)}
              width={Math.max(x(b.end) - x(b.start), 2)}
              height={LANE_HEIGHT}
            >
              <title>
                {`#${b.step.seq} ${b.step.name}: ${b.step.status}, ` +
                  (stepTimes(b.step) || formatDuration((b.end - b.start) / 1000)) +
                  barProgress(b.step)}
              </title>
            </rect>
          ))}
      </svg>
      <div className="dnb-timeline-axis">
        <span>0 s</span>
        {lanes > MAX_LANES && <span>{lanes - MAX_LANES} more lanes not shown</span>}
        <span className="dnb-timeline-end">{formatDuration(span / 1000)}</span>
      </div>
    </div>
  );
}

/** ", epoch 3/10" on the bar of a running step whose heartbeat states its progress. */
function barProgress(step: IStep): string {
  const progress = step.heartbeat_progress ?? null;
  return showsHeartbeat(step) && progress !== null ? `, ${progressText(progress)}` : '';
}
