//! What the synthetic scenes are made of: object classes, their named parts, the named
//! colours, and each class's geometry as a few filled primitives in object-local pixels.

use crate::rng::SplitMix64;

/// An object class of the synthetic benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    House,
    Tree,
    Car,
    Mug,
    Boat,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::House,
        Class::Tree,
        Class::Car,
        Class::Mug,
        Class::Boat,
    ];

    /// Singular noun.
    pub fn name(self) -> &'static str {
        match self {
            Class::House => "house",
            Class::Tree => "tree",
            Class::Car => "car",
            Class::Mug => "mug",
            Class::Boat => "boat",
        }
    }

    /// Plural noun.
    pub fn plural(self) -> &'static str {
        match self {
            Class::House => "houses",
            Class::Tree => "trees",
            Class::Car => "cars",
            Class::Mug => "mugs",
            Class::Boat => "boats",
        }
    }

    /// The named parts, in painting order (later parts are drawn over earlier ones).
    pub fn parts(self) -> &'static [PartKind] {
        match self {
            Class::House => &[PartKind::Walls, PartKind::Roof, PartKind::Door],
            Class::Tree => &[PartKind::Trunk, PartKind::Crown],
            Class::Car => &[PartKind::Body, PartKind::Window, PartKind::Wheels],
            Class::Mug => &[PartKind::Body, PartKind::Handle],
            Class::Boat => &[PartKind::Sail, PartKind::Hull],
        }
    }

    /// The part that carries the object's named colour.
    pub fn main_part(self) -> PartKind {
        match self {
            Class::House => PartKind::Walls,
            Class::Tree => PartKind::Crown,
            Class::Car | Class::Mug => PartKind::Body,
            Class::Boat => PartKind::Hull,
        }
    }

    /// Range of the object's size parameter in pixels (the width, or the height for trees),
    /// chosen so that every part stays at least ~7 px thick at the smallest size.
    pub fn size_range(self) -> (f32, f32) {
        match self {
            Class::House => (34.0, 62.0),
            Class::Tree => (38.0, 64.0),
            Class::Car => (48.0, 72.0),
            Class::Mug => (42.0, 60.0),
            Class::Boat => (40.0, 64.0),
        }
    }
}

/// A named part of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartKind {
    Walls,
    Roof,
    Door,
    Trunk,
    Crown,
    Body,
    Window,
    Wheels,
    Handle,
    Hull,
    Sail,
}

impl PartKind {
    pub const ALL: [PartKind; 11] = [
        PartKind::Walls,
        PartKind::Roof,
        PartKind::Door,
        PartKind::Trunk,
        PartKind::Crown,
        PartKind::Body,
        PartKind::Window,
        PartKind::Wheels,
        PartKind::Handle,
        PartKind::Hull,
        PartKind::Sail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PartKind::Walls => "walls",
            PartKind::Roof => "roof",
            PartKind::Door => "door",
            PartKind::Trunk => "trunk",
            PartKind::Crown => "crown",
            PartKind::Body => "body",
            PartKind::Window => "window",
            PartKind::Wheels => "wheels",
            PartKind::Handle => "handle",
            PartKind::Hull => "hull",
            PartKind::Sail => "sail",
        }
    }
}

/// A named object colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Colour {
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// The nominal sRGB value (each object jitters it slightly).
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [204.0, 38.0, 38.0],
            Colour::Green => [46.0, 158.0, 64.0],
            Colour::Blue => [44.0, 84.0, 204.0],
            Colour::Yellow => [236.0, 212.0, 48.0],
            Colour::Purple => [136.0, 58.0, 176.0],
            Colour::Orange => [242.0, 136.0, 28.0],
        }
    }
}

/// The fill colour of a part other than the main one (plausible, unsaturated, never one of
/// the named colours), chosen per object.
pub fn secondary_rgb(part: PartKind, main: [f32; 3], rng: &mut SplitMix64) -> [f32; 3] {
    let choices: &[[f32; 3]] = match part {
        PartKind::Roof => &[[96.0, 62.0, 44.0], [76.0, 82.0, 96.0], [62.0, 58.0, 58.0]],
        PartKind::Door => &[[122.0, 80.0, 46.0], [88.0, 58.0, 38.0], [70.0, 70.0, 78.0]],
        PartKind::Trunk => &[[112.0, 72.0, 42.0], [90.0, 62.0, 40.0]],
        PartKind::Window => &[[190.0, 216.0, 230.0], [170.0, 200.0, 222.0]],
        PartKind::Wheels => &[[36.0, 36.0, 40.0], [54.0, 52.0, 50.0]],
        PartKind::Sail => &[[240.0, 236.0, 224.0], [228.0, 230.0, 236.0]],
        // A darker shade of the body: plausible for a mug, and a visible boundary.
        PartKind::Handle => return main.map(|c| c * 0.6),
        PartKind::Walls | PartKind::Crown | PartKind::Body | PartKind::Hull => return main,
    };
    let i = rng.below(choices.len());
    choices.get(i).copied().unwrap_or(main)
}

/// A filled primitive in image pixel coordinates; a pixel belongs to it when its centre does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prim {
    /// Axis-aligned rectangle with rounded corners of radius `r` (0 for sharp corners).
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        r: f32,
    },
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
    },
    /// Convex polygon with 3 or 4 vertices (the 4th repeated for a triangle).
    Convex {
        pts: [(f32, f32); 4],
    },
    /// The part of the annulus `r_in ≤ |p − c| ≤ r_out` on the side `side` (+1 right, −1
    /// left) of the vertical line through the centre (a mug handle).
    HalfRing {
        cx: f32,
        cy: f32,
        r_in: f32,
        r_out: f32,
        side: f32,
    },
}

impl Prim {
    pub fn contains(&self, x: f32, y: f32) -> bool {
        match *self {
            Prim::Rect { x0, y0, x1, y1, r } => {
                if x < x0 || x >= x1 || y < y0 || y >= y1 {
                    return false;
                }
                if r <= 0.0 {
                    return true;
                }
                let cx = x.clamp(x0 + r, x1 - r);
                let cy = y.clamp(y0 + r, y1 - r);
                (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r
            }
            Prim::Ellipse { cx, cy, rx, ry } => {
                let dx = (x - cx) / rx;
                let dy = (y - cy) / ry;
                dx * dx + dy * dy <= 1.0
            }
            Prim::Convex { pts } => {
                // Inside when on the same side of every edge (either winding).
                let mut pos = false;
                let mut neg = false;
                for i in 0..4 {
                    let (ax, ay) = pts[i];
                    let (bx, by) = pts[(i + 1) % 4];
                    if ax == bx && ay == by {
                        continue;
                    }
                    let c = (bx - ax) * (y - ay) - (by - ay) * (x - ax);
                    pos |= c > 0.0;
                    neg |= c < 0.0;
                }
                !(pos && neg)
            }
            Prim::HalfRing {
                cx,
                cy,
                r_in,
                r_out,
                side,
            } => {
                let d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
                (x - cx) * side >= 0.0 && d2 >= r_in * r_in && d2 <= r_out * r_out
            }
        }
    }
}

fn tri(a: (f32, f32), b: (f32, f32), c: (f32, f32)) -> Prim {
    Prim::Convex { pts: [a, b, c, c] }
}

fn rect(x0: f32, y0: f32, x1: f32, y1: f32, r: f32) -> Prim {
    Prim::Rect {
        x0: x0.min(x1),
        y0: y0.min(y1),
        x1: x0.max(x1),
        y1: y0.max(y1),
        r,
    }
}

/// The shape of one object instance: its box and, per part (in [`Class::parts`] order),
/// the primitives whose union is that part.
#[derive(Debug, Clone)]
pub struct Shape {
    pub x0: f32,
    pub y0: f32,
    pub w: f32,
    pub h: f32,
    pub parts: Vec<Vec<Prim>>,
}

/// Width and height of an object of `class` with size parameter `s` (before placement).
pub fn extent(class: Class, s: f32) -> (f32, f32) {
    match class {
        Class::House => (s, s * 0.98),
        Class::Tree => (s * 0.78, s),
        Class::Car => (s, s * 0.6),
        Class::Mug => (s, s * 0.86),
        Class::Boat => (s, s * 0.9),
    }
}

/// Builds the shape of a `class` object of size `s` with its top-left corner at `(x0, y0)`.
/// `rng` adds small per-instance variations of the proportions and mirrors half of the
/// objects left to right.
pub fn shape(class: Class, s: f32, x0: f32, y0: f32, rng: &mut SplitMix64) -> Shape {
    let (w, h) = extent(class, s);
    let flip = rng.chance(0.5);
    // Local coordinates (u, v) in [0, 1] of the object's box → pixels.
    let px = |u: f32| x0 + w * if flip { 1.0 - u } else { u };
    let py = |v: f32| y0 + v * h;
    let parts = match class {
        Class::House => {
            let eave = rng.uniform(0.40, 0.48);
            let door_w = rng.uniform(0.24, 0.28);
            let door_c = rng.uniform(0.34, 0.66);
            let walls = vec![rect(px(0.1), py(eave - 0.04), px(0.9), py(1.0), 0.0)];
            let roof = vec![tri(
                (px(0.0), py(eave)),
                (px(1.0), py(eave)),
                (px(0.5), py(0.0)),
            )];
            let door = vec![rect(
                px(door_c - door_w / 2.0),
                py(0.62),
                px(door_c + door_w / 2.0),
                py(1.0),
                0.0,
            )];
            vec![walls, roof, door]
        }
        Class::Tree => {
            let crown_h = rng.uniform(0.66, 0.74);
            let trunk_w = rng.uniform(0.28, 0.32);
            let trunk = vec![rect(
                px(0.5 - trunk_w / 2.0),
                py(0.5),
                px(0.5 + trunk_w / 2.0),
                py(1.0),
                0.0,
            )];
            let crown = vec![Prim::Ellipse {
                cx: px(0.5),
                cy: py(crown_h / 2.0),
                rx: w / 2.0,
                ry: crown_h * h / 2.0,
            }];
            vec![trunk, crown]
        }
        Class::Car => {
            let cab0 = rng.uniform(0.16, 0.26);
            let cab1 = rng.uniform(0.72, 0.82);
            let body = vec![
                rect(px(0.0), py(0.38), px(1.0), py(0.84), 0.12 * h),
                Prim::Convex {
                    pts: [
                        (px(cab0), py(0.4)),
                        (px(cab0 + 0.08), py(0.0)),
                        (px(cab1 - 0.08), py(0.0)),
                        (px(cab1), py(0.4)),
                    ],
                },
            ];
            let window = vec![rect(
                px(cab0 + 0.1),
                py(0.1),
                px(cab1 - 0.1),
                py(0.38),
                0.04 * h,
            )];
            let r = 0.2 * h;
            let wheels = vec![
                Prim::Ellipse {
                    cx: px(0.24),
                    cy: py(1.0) - r,
                    rx: r,
                    ry: r,
                },
                Prim::Ellipse {
                    cx: px(0.76),
                    cy: py(1.0) - r,
                    rx: r,
                    ry: r,
                },
            ];
            vec![body, window, wheels]
        }
        Class::Mug => {
            let body_w = 0.66;
            let body = vec![rect(px(0.0), py(0.0), px(body_w), py(1.0), 0.1 * w)];
            let r_out = rng.uniform(0.33, 0.36) * w;
            let thick = rng.uniform(0.17, 0.19) * w;
            let handle = vec![Prim::HalfRing {
                cx: px(body_w),
                cy: py(0.5),
                r_in: r_out - thick,
                r_out,
                side: if flip { -1.0 } else { 1.0 },
            }];
            vec![body, handle]
        }
        Class::Boat => {
            let mast = rng.uniform(0.42, 0.52);
            let sail = vec![tri(
                (px(mast), py(0.0)),
                (px(mast), py(0.64)),
                (px(mast + 0.42), py(0.64)),
            )];
            let hull = vec![Prim::Convex {
                pts: [
                    (px(0.0), py(0.64)),
                    (px(1.0), py(0.64)),
                    (px(0.84), py(1.0)),
                    (px(0.16), py(1.0)),
                ],
            }];
            vec![sail, hull]
        }
    };
    Shape {
        x0,
        y0,
        w,
        h,
        parts,
    }
}
