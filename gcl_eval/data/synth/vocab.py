"""Vocabulary of the synthetic product world: attributes, their words, brands and phrasings.

Each attribute value has a canonical word and synonyms; titles and queries pick among them so that
a model must learn that "navy" and "blue" mean the same colour. Colours carry an RGB value, categories
a shape and patterns a texture, which the product image shows (images.py).
"""

from __future__ import annotations

# category -> (family, words used for it, shape drawn in the image)
CATEGORIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "t-shirt": ("apparel", ("t-shirt", "tee", "tee shirt"), "tshirt"),
    "dress": ("apparel", ("dress", "frock"), "dress"),
    "jeans": ("apparel", ("jeans", "denim pants", "trousers"), "trousers"),
    "hoodie": ("apparel", ("hoodie", "sweatshirt", "pullover"), "hoodie"),
    "sneakers": ("footwear", ("sneakers", "trainers", "running shoes"), "shoe"),
    "boots": ("footwear", ("boots", "ankle boots"), "boot"),
    "handbag": ("bags", ("handbag", "purse", "tote bag"), "bag"),
    "backpack": ("bags", ("backpack", "rucksack"), "backpack"),
    "mug": ("home", ("mug", "coffee cup", "cup"), "mug"),
    "lamp": ("home", ("lamp", "table lamp", "desk light"), "lamp"),
    "cushion": ("home", ("cushion", "throw pillow", "pillow"), "cushion"),
    "vase": ("home", ("vase", "flower vase"), "vase"),
}

# colour -> (RGB, words)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((200, 30, 40), ("red", "crimson", "scarlet")),
    "blue": ((40, 70, 190), ("blue", "navy", "cobalt")),
    "green": ((40, 150, 60), ("green", "emerald", "olive")),
    "black": ((25, 25, 25), ("black", "jet black", "onyx")),
    "white": ((245, 245, 240), ("white", "ivory", "snow white")),
    "yellow": ((235, 200, 30), ("yellow", "mustard", "lemon")),
    "pink": ((235, 120, 170), ("pink", "blush", "rose")),
    "grey": ((128, 128, 128), ("grey", "gray", "charcoal")),
    "brown": ((120, 75, 40), ("brown", "chocolate", "tan")),
    "purple": ((120, 50, 160), ("purple", "violet", "plum")),
    "orange": ((240, 130, 30), ("orange", "tangerine", "burnt orange")),
    "teal": ((20, 140, 140), ("teal", "turquoise", "aqua")),
}

# family -> material -> words
MATERIALS: dict[str, dict[str, tuple[str, ...]]] = {
    "apparel": {
        "cotton": ("cotton", "organic cotton", "100% cotton"),
        "linen": ("linen", "flax linen"),
        "wool": ("wool", "merino wool", "knit wool"),
        "silk": ("silk", "satin silk"),
        "polyester": ("polyester", "poly blend"),
        "denim": ("denim", "stretch denim"),
    },
    "footwear": {
        "leather": ("leather", "genuine leather", "full-grain leather"),
        "suede": ("suede", "suede leather"),
        "canvas": ("canvas", "cotton canvas"),
        "mesh": ("mesh", "breathable mesh"),
        "rubber": ("rubber", "waterproof rubber"),
    },
    "bags": {
        "leather": ("leather", "genuine leather", "vegan leather"),
        "canvas": ("canvas", "heavy canvas"),
        "nylon": ("nylon", "ripstop nylon"),
        "straw": ("straw", "woven straw"),
        "suede": ("suede", "faux suede"),
    },
    "home": {
        "ceramic": ("ceramic", "stoneware", "porcelain"),
        "glass": ("glass", "blown glass"),
        "wood": ("wood", "wooden", "solid oak"),
        "velvet": ("velvet", "soft velvet"),
        "metal": ("metal", "brushed metal", "brass"),
        "bamboo": ("bamboo", "natural bamboo"),
    },
}

# pattern -> words (the image draws a texture for each; "solid" draws none)
PATTERNS: dict[str, tuple[str, ...]] = {
    "solid": ("solid", "plain", "solid colour"),
    "striped": ("striped", "stripe", "pinstripe"),
    "polka-dot": ("polka dot", "dotted", "spotted"),
    "checked": ("checked", "plaid", "gingham"),
    "floral": ("floral", "flower print", "botanical"),
    "geometric": ("geometric", "zigzag", "chevron"),
}

STYLES: dict[str, tuple[str, ...]] = {
    "vintage": ("vintage", "retro", "old-school"),
    "modern": ("modern", "contemporary", "sleek"),
    "casual": ("casual", "everyday", "relaxed"),
    "minimalist": ("minimalist", "simple", "clean-line"),
    "boho": ("boho", "bohemian", "hippie"),
    "classic": ("classic", "timeless", "traditional"),
}

# brand tier -> brands; a product's tier depends on its quality latent (world.py)
BRANDS: dict[str, tuple[str, ...]] = {
    "premium": ("Aurelio", "Maison Vey", "Northcraft", "Halden & Co", "Lumière", "Kessler"),
    "mid": ("Brightline", "Oakmont", "Urbanite", "Coastal Co", "Meadow", "Pinnacle", "Harbor", "Vista"),
    "budget": ("ValueMart", "BasicHome", "EconoWear", "QuickBuy", "SaveMore", "DailyDeal"),
}
BRAND_TIERS = ("budget", "mid", "premium")

# quality words: shown only on some products, more often the better (or worse) they are
BESTSELLER_WORDS = ("Bestseller", "Best Seller", "#1 Best Seller", "Top Rated")
PREMIUM_WORDS = ("Premium", "Luxury", "Designer", "High-End")
BUDGET_WORDS = ("Budget", "Cheap", "Clearance", "Bargain")
# marketing noise: carries no information about the product
MARKETING_WORDS = ("New", "2026 Collection", "Free Shipping", "Hot Sale", "Limited Edition", "Gift Idea",
                   "Trending", "Fast Delivery", "Exclusive", "Must Have")
RATING_FORMATS = ("{r:.1f} stars", "★{r:.1f}", "({r:.1f}/5)", "rated {r:.1f}", "{r:.1f} out of 5")

# query phrasings; {mods} = the query's modifiers in some order, {cat} = a category word
QUERY_TEMPLATES = (
    "{mods} {cat}",
    "{mods} {cat}",
    "{cat} {mods}",
    "{mods} {cat} for sale",
    "buy {mods} {cat}",
    "{mods} {cat} online",
    "best {mods} {cat}",
    "{cat} in {mods}",
)
