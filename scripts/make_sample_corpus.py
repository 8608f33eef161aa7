#!/usr/bin/env python
"""Generate the bundled sample corpus (beekeeping) in ``data/sample/``.

Usage::

    .venv/bin/python scripts/make_sample_corpus.py            # (re)generate the corpus
    .venv/bin/python scripts/make_sample_corpus.py --check    # verify the corpus on disk

The corpus is twelve short documents about beekeeping in eight formats (PDF, HTML,
Markdown, DOCX, PPTX, TXT, CSV, EML).  ``data/sample-questions.jsonl`` (outside the
ingested folder) holds evaluation questions; each names the one document that
answers it and a short answer phrase that occurs verbatim in that document.

Generation is deterministic: all metadata dates/titles are fixed and the
timestamps inside the DOCX/PPTX zip containers are normalised, so re-running
the script produces byte-identical files.  ``--check`` re-generates into a
temporary directory and compares, then extracts the text of every document and
verifies word counts, formats and that every answer phrase is found in (and
only in) its document.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import re
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
QUESTIONS_PATH = REPO_ROOT / "data" / "sample-questions.jsonl"

FIXED_DATE = datetime(2024, 5, 1, 9, 0, 0, tzinfo=timezone.utc)
ZIP_DATE = (2024, 5, 1, 9, 0, 0)
AUTHOR = "ragline sample corpus"

MIN_WORDS, MAX_WORDS = 250, 600

# ---------------------------------------------------------------------------
# Content.  Each document is a title plus a list of blocks:
#   ("h2", text) | ("p", text) | ("ul", [items]) | ("pagebreak",)
# PDF text must stay within latin-1 (core fonts); we keep everything ASCII.
# ---------------------------------------------------------------------------

HIVE_ANATOMY = {
    "title": "Hive Anatomy and Frames",
    "blocks": [
        ("p", "Most beekeepers today work with movable-frame hives, which let every comb be "
              "lifted out, inspected and returned without harming the colony. The design that "
              "made this practical was patented in 1852 by the Reverend Lorenzo Lorrain "
              "Langstroth, an American clergyman from Philadelphia."),
        ("h2", "Bee space"),
        ("p", "Langstroth's key observation was the bee space: a gap of roughly 6 to 9 mm "
              "(1/4 to 3/8 inch) that bees keep open as a walkway. Gaps narrower than this are "
              "sealed with propolis, a resin the bees collect from tree buds, while wider gaps "
              "are filled with burr comb. A hive built so that every frame, box and cover is "
              "separated by exactly one bee space can be taken apart with little more than a "
              "hive tool."),
        ("h2", "The parts of a Langstroth hive, from the ground up"),
        ("ul", [
            "Hive stand: raises the hive 30 to 45 cm off the ground, away from damp and skunks.",
            "Bottom board: the floor of the hive, either solid or screened with 3 mm mesh for "
            "ventilation.",
            "Entrance reducer: a wooden strip that narrows the entrance for small or weak colonies.",
            "Brood boxes: one or two deep boxes where the queen lays and the colony raises brood.",
            "Queen excluder: a grid with slots about 4.2 mm wide that lets workers pass but keeps "
            "the larger queen out of the honey supers.",
            "Honey supers: shallower boxes added above the brood nest to hold surplus honey.",
            "Inner cover: a flat board with a central hole, creating a dead-air space under the roof.",
            "Telescoping outer cover: a metal-clad lid that overhangs the top box on all sides.",
        ]),
        ("h2", "Box and frame sizes"),
        ("p", "Langstroth boxes come in three common depths. A deep box is 9 5/8 inches (245 mm) "
              "tall, a medium is 6 5/8 inches (168 mm) and a shallow is 5 11/16 inches (144 mm). "
              "All share the same length, so every frame has a top bar 19 inches long, and boxes "
              "are sold in 10-frame and lighter 8-frame widths. A deep box full of honey can "
              "weigh more than 35 kg, which is why many hobbyists use mediums throughout."),
        ("h2", "Frames and foundation"),
        ("p", "Each frame consists of a top bar, two end bars and a bottom bar. Hoffman "
              "self-spacing frames have end bars that are wider at the top, so frames pushed "
              "together sit about 35 mm (1 3/8 inch) apart from centre to centre, the natural "
              "spacing of brood comb. Frames are usually fitted with foundation, a thin sheet of "
              "beeswax or plastic embossed with the hexagonal cell pattern. Worker cells are "
              "about 5.4 mm across and drone cells about 6.4 mm, so foundation printed with "
              "worker-sized cells discourages the colony from raising large numbers of drones. "
              "Some beekeepers prefer foundationless frames with only a starter strip of wax, "
              "letting the bees draw natural comb."),
        ("h2", "Other hive designs"),
        ("p", "The British National hive is the most common design in the United Kingdom, and "
              "the Dadant hive, with its larger brood frames, is widespread in continental "
              "Europe. Top-bar hives and the vertical Warre hive use bars instead of full frames "
              "and are popular with natural beekeepers, although their combs are more fragile "
              "to handle."),
    ],
}

COLONY_ROLES = {
    "title": "Roles in the Honey Bee Colony",
    "blocks": [
        ("p", "A honey bee colony is a superorganism made up of three kinds of adult bee. In "
              "midsummer a strong colony contains a single queen, 20,000 to 60,000 workers and a "
              "few hundred to a couple of thousand drones. Each caste has a distinct body, "
              "lifespan and job, and none of them can survive alone."),
        ("h2", "The queen"),
        ("p", "The queen is the only fully developed female and the mother of nearly every bee in "
              "the hive. A few days after emerging she makes one or more mating flights and mates "
              "with 12 to 20 drones, storing several million sperm in an organ called the "
              "spermatheca, which supplies her for the rest of her life. At the peak of spring "
              "build-up she can lay 1,500 to 2,000 eggs per day. She also produces queen "
              "mandibular pheromone, which workers pass around the colony and which tells them "
              "that their queen is present and healthy. A queen usually lives two to three "
              "years, occasionally as long as five."),
        ("h2", "Workers"),
        ("p", "Workers are females whose ovaries stay undeveloped while a queen is present. "
              "Their jobs change with age, a pattern known as age polyethism:"),
        ("ul", [
            "Days 1 to 3: cleaning and polishing cells.",
            "Days 4 to 12: nurse bees, feeding larvae with brood food secreted from their "
            "hypopharyngeal glands.",
            "Days 12 to 18: building comb from wax made by four pairs of wax glands on the "
            "underside of the abdomen, receiving nectar and packing pollen.",
            "Days 18 to 21: guarding the entrance.",
            "From about three weeks old: foraging for nectar, pollen, water and propolis.",
        ]),
        ("p", "Foragers use the waggle dance to tell nestmates the direction and distance of "
              "food, and release scent from the Nasonov gland to guide other bees home. In "
              "summer a worker lives only about five to six weeks, worn out by flying."),
        ("h2", "Drones"),
        ("p", "Drones are males that develop from unfertilised eggs, so they carry only one set "
              "of chromosomes. They have large eyes that meet at the top of the head, no stinger, "
              "and they neither forage nor make wax. Their one task is to mate with a queen from "
              "another colony, which happens in flight at drone congregation areas; the drone "
              "dies immediately after mating. When nectar runs short in autumn, workers drag the "
              "remaining drones out of the hive."),
        ("h2", "Development times"),
        ("p", "Eggs of all three castes hatch after three days, but the time to emergence "
              "differs. A queen emerges 16 days after the egg is laid, a worker takes 21 days and "
              "a drone 24 days. The difference lies in diet: every young larva receives royal "
              "jelly, but only a larva destined to become a queen is fed it throughout her "
              "larval life."),
    ],
}

SEASONAL_CALENDAR = {
    "title": "A Beekeeping Calendar for a Temperate Climate",
    "blocks": [
        ("p", "Dates are for the Northern Hemisphere; shift them by six months south of the "
              "equator. Beekeeping follows the flowers more than the calendar, so treat the "
              "months below as a guide and watch what is blooming near your apiary."),
        ("h2", "January and February"),
        ("p", "The colony is quiet, but the queen resumes laying in small amounts soon after the "
              "winter solstice, so consumption of stores begins to rise. Lift the back of each "
              "hive slightly to judge its weight without opening it. Use the indoor time to "
              "build and paint new boxes, wax frames and order package bees or nucleus colonies "
              "for April."),
        ("h2", "March and April"),
        ("p", "Make the first full inspection on a calm, sunny day when the air temperature is at "
              "least 15 degrees Celsius (about 60 F). Check for a laying queen, a compact brood "
              "pattern and enough food. Early pollen from willow, hazel and dandelion fuels "
              "brood rearing. If stores are short, feed 1:1 syrup, equal parts sugar and water "
              "by weight, which also stimulates the queen to lay. Many beekeepers reverse the "
              "brood boxes now, moving the upper box holding the cluster to the bottom so the "
              "queen has room to expand upwards. Install packages and nucs in April."),
        ("h2", "May and June"),
        ("p", "The colony grows fastest now and the main nectar flow begins, from fruit blossom, "
              "black locust, clover and later lime (linden) trees. Add honey supers before the "
              "bees need them, and inspect every seven to nine days while colonies are building "
              "queen cells. A healthy colony may add a full box of bees in a few weeks."),
        ("h2", "July and August"),
        ("p", "After the main flow many areas fall into a summer dearth. Bees with nothing to "
              "forage turn to robbing weak colonies, so reduce entrances and never spill syrup "
              "or honey near the hives. Remove and extract full supers. Check mite levels "
              "straight after the harvest, because the colony is now raising the long-lived "
              "bees that must survive until spring."),
        ("h2", "September and October"),
        ("p", "Goldenrod, ivy and asters provide the last flows. Feed heavy 2:1 syrup, two parts "
              "sugar to one part water, so the bees can store it quickly while nights are still "
              "warm enough for them to evaporate it. Combine weak colonies with strong ones, "
              "since a small colony rarely survives the cold months. Fit entrance reducers or "
              "mouse guards before the first frosts."),
        ("h2", "November and December"),
        ("p", "Leave the bees alone. Check after storms that roofs are secure, clean and repair "
              "equipment, render old comb into wax and bring your records up to date with notes "
              "on each colony's temper, productivity and losses."),
    ],
}

VARROA = {
    "title": "Varroa Mite Monitoring and Control",
    "blocks": [
        ("p", "The varroa mite, Varroa destructor, is the most damaging pest of the western honey "
              "bee, Apis mellifera. Originally a parasite of the Asian honey bee, Apis cerana, it "
              "crossed over in the twentieth century and has since spread to almost every "
              "beekeeping region; Australia detected it in 2022. An untreated colony in a "
              "temperate climate usually collapses within two to three years of becoming "
              "infested."),
        ("h2", "Biology"),
        ("p", "Adult female mites are reddish-brown, oval and flattened, about 1.6 mm wide and "
              "1.1 mm long, and visible to the naked eye. They feed on the fat body tissue of "
              "larvae, pupae and adult bees, weakening them and shortening their lives. Worse, "
              "varroa transmits viruses, above all deformed wing virus, which produces bees with "
              "crumpled, useless wings. A foundress mite enters a brood cell shortly before it "
              "is capped and lays eggs on the developing pupa. Mites prefer drone brood, because "
              "its longer capped period of about 14 days, against about 12 for worker brood, "
              "lets more daughter mites mature."),
        ("h2", "Monitoring"),
        ("p", "Treat according to measured mite levels, not the calendar. The standard method is "
              "the alcohol wash:"),
        ("ul", [
            "Take about 300 bees (roughly half a cup) from a brood frame, making sure the queen "
            "is not among them.",
            "Shake them for one minute in a jar of 70 percent isopropyl alcohol.",
            "Pour through a mesh and count the mites released.",
            "Divide the count by 3 to obtain mites per 100 bees.",
        ]),
        ("p", "A sugar roll with powdered sugar gives a similar estimate without killing the "
              "sample, and a sticky board under a screened floor shows the natural mite drop, "
              "although it is less reliable. A common action threshold is 3 mites per 100 bees "
              "in late summer; in spring even 1 to 2 per 100 is a warning sign."),
        ("pagebreak",),
        ("h2", "Treatment options"),
        ("ul", [
            "Oxalic acid: applied as a vapour or a sugar-syrup dribble. It does not penetrate "
            "cappings, so it works best when the colony is broodless, for example in early "
            "winter or after a brood break.",
            "Formic acid: sold as Formic Pro and Mite Away Quick Strips. It penetrates cappings "
            "and kills mites in sealed brood, but it is temperature-sensitive and can harm "
            "queens in hot weather.",
            "Thymol: a compound from thyme oil, used in Apiguard and ApiLife Var.",
            "Amitraz: the active ingredient of Apivar strips, which stay in the brood nest for "
            "42 to 56 days.",
            "Fluvalinate (Apistan) and coumaphos (CheckMite+): older synthetic miticides to which "
            "many mite populations are now resistant.",
        ]),
        ("p", "Always follow the label, remove honey supers when the product requires it, and "
              "rotate between chemical classes so that mites do not become resistant to the few "
              "treatments that still work."),
        ("h2", "Integrated pest management"),
        ("p", "Integrated pest management combines monitoring, mechanical methods and "
              "treatments. Drone brood removal uses a frame of drone foundation as a trap: mites "
              "concentrate in the drone cells, and the capped frame is cut out and frozen. A "
              "brood break, made by caging the queen or by splitting the colony, interrupts mite "
              "reproduction and makes oxalic acid far more effective. Breeders have produced "
              "more tolerant stock, including bees with the Varroa Sensitive Hygiene (VSH) trait, "
              "which uncap and remove infested pupae, and Russian honey bees from the Primorsky "
              "region. Record every count and treatment so you can judge what actually worked."),
    ],
}

HONEY_HARVEST = {
    "title": "Harvesting and Extracting Honey",
    "blocks": [
        ("p", "Honey is ready to take when the bees have evaporated the nectar and sealed the "
              "cells with wax cappings. A practical rule is to harvest only frames that are at "
              "least 80 percent capped, because uncapped nectar holds too much water and may "
              "ferment in the jar."),
        ("h2", "Checking moisture"),
        ("p", "Honey should contain no more than 18.6 percent water; above about 19 percent the "
              "natural yeasts in honey can start fermentation. A handheld refractometer, "
              "calibrated with olive oil or a calibration block, gives a reading from a single "
              "drop. A quick field test is to shake a frame horizontally over the open hive: if "
              "nectar rains out, it is not ready."),
        ("h2", "Clearing bees from the supers"),
        ("p", "Several methods remove the bees before the supers are taken away:"),
        ("ul", [
            "Bee escape board: a board with a one-way Porter escape or a triangular maze, placed "
            "under the supers 24 to 48 hours before the harvest.",
            "Fume board: a felt-lined cover sprayed with a repellent such as Bee Quick, which "
            "drives the bees down within a few minutes on a sunny day.",
            "Brushing or shaking: practical for a few frames, but it angers the bees.",
            "Leaf blower: used by larger operations to blow bees out of whole supers.",
        ]),
        ("h2", "Uncapping and extracting"),
        ("p", "Work in a warm, bee-tight room, because warm honey flows more freely. Slice the "
              "cappings off with a heated electric uncapping knife, or open them with an "
              "uncapping fork, and let the cappings drain in a tank; they yield the cleanest "
              "beeswax. The frames then go into an extractor, which spins them so that "
              "centrifugal force throws the honey out of the cells. In a tangential extractor "
              "the frames face outward and only one side empties at a time, so each frame must "
              "be turned. A radial extractor holds the frames like the spokes of a wheel and "
              "empties both sides at once. Start slowly to avoid breaking new comb, then "
              "increase the speed."),
        ("h2", "Straining and bottling"),
        ("p", "Pass the honey through a double stainless steel sieve to remove wax and bee parts, "
              "then let it stand in a settling tank fitted with a honey gate for 24 to 48 hours "
              "so that air bubbles and fine wax rise to the top. Bottle into clean, dry jars and "
              "label them with weight and origin as local food regulations require."),
        ("h2", "Crystallisation and storage"),
        ("p", "All honey eventually crystallises, at a speed set mainly by its ratio of glucose "
              "to fructose. Oilseed rape honey can set within two weeks, while black locust "
              "honey, sold in Europe as acacia honey, may stay liquid for a year or more. Store "
              "honey sealed in a cool, dry place. Crystallised honey can be made liquid again by "
              "warming it gently in a water bath below 40 degrees Celsius; overheating darkens "
              "honey and raises its HMF (hydroxymethylfurfural) content, a measure of heat "
              "damage and age."),
    ],
}

SWARMING = {
    "title": "Swarming and Swarm Prevention",
    "blocks": [
        ("p", "Swarming is how a honey bee colony reproduces. The old queen leaves the hive with "
              "roughly half to two-thirds of the workers, forming a prime swarm, while the bees "
              "left behind raise a new queen from the queen cells they have started. A strong "
              "colony may throw one or more afterswarms, also called casts, each headed by a "
              "virgin queen. For a beekeeper, a swarm in May or June means losing much of the "
              "workforce just before the main nectar flow, and usually most of that season's "
              "honey crop."),
        ("h2", "Why colonies swarm"),
        ("ul", [
            "Congestion: a crowded brood nest with little room for the queen to lay.",
            "Backfilling: nectar stored in the brood area, leaving no empty cells.",
            "Weaker queen signal: in a crowded hive the queen's pheromone reaches fewer workers.",
            "Age of the queen: colonies headed by a queen in her second year or older swarm more "
            "readily than those with a young queen.",
            "Genetics: some strains are far more swarm-prone than others.",
        ]),
        ("h2", "Signs of swarm preparation"),
        ("p", "The first warning is the appearance of queen cups containing eggs or larvae. "
              "Swarm cells usually hang along the bottom edges of the frames, and there are "
              "often ten or more of them. Supersedure cells, built when the colony intends to "
              "replace a failing queen, tend to be fewer and are found in the middle of the comb "
              "face. Before swarming, workers feed the queen less so that she slims down enough "
              "to fly, and egg laying drops. The prime swarm usually leaves soon after the first "
              "queen cell is capped, often on a warm late morning."),
        ("h2", "What a swarm does next"),
        ("p", "The departing bees first settle as a cluster on a branch or fence near the hive, "
              "where they may hang for a few hours or up to two or three days. Scout bees inspect "
              "possible homes and advertise them with the waggle dance. Research by Thomas "
              "Seeley, described in his book Honeybee Democracy, showed that scouts favour a "
              "cavity of about 40 litres with a small entrance several metres above the ground, "
              "and that the swarm decides by quorum once enough scouts gather at one site."),
        ("h2", "Prevention methods"),
        ("ul", [
            "Give space early: add supers before the brood nest fills.",
            "Checkerboarding: alternating drawn comb and capped honey frames above the brood nest "
            "in late winter, a technique developed by Walt Wright.",
            "Demaree method: described by George Demaree in 1884, the queen is kept in the bottom "
            "box with empty comb while the brood is moved above a queen excluder.",
            "Artificial swarm: the Pagden method puts the old queen in a new box on the original "
            "site, so the flying bees join her while the brood stays in the old box nearby.",
            "Splits: dividing a strong colony into two or more nucleus colonies.",
            "Requeening: replacing the queen every one or two years.",
        ]),
        ("h2", "Catching swarms"),
        ("p", "Bait hives placed 3 to 5 metres high, with a frame of old brood comb and a few "
              "drops of lemongrass oil, which mimics the Nasonov orientation pheromone, attract "
              "scouts during swarm season. A swarm cluster on a branch can usually be shaken "
              "into a box; if the queen is inside, the rest of the bees march in within about "
              "half an hour."),
    ],
}

POLLINATION = {
    "title": "Commercial Pollination Services",
    "blocks": [
        ("p", "About a third of the food in a typical diet comes from crops that benefit from "
              "insect pollination, and the western honey bee is the pollinator that can be moved "
              "in large numbers to where it is needed. Migratory beekeepers truck colonies from "
              "crop to crop through the year, and in the United States pollination fees now earn "
              "many commercial operations more than honey does."),
        ("h2", "Almonds in California"),
        ("p", "The largest pollination event in the world takes place each year in the almond "
              "orchards of California's Central Valley. Almond trees bloom from mid-February to "
              "mid-March, when few local insects are active, and most varieties need "
              "cross-pollination between rows of different cultivars. Growers usually stock "
              "about two colonies per acre (roughly five per hectare), so more than two million "
              "colonies, well over half of all managed colonies in the country, are moved into "
              "the orchards for a few weeks. Rental fees have been close to 200 US dollars per "
              "colony in recent seasons."),
        ("h2", "Contracts and colony strength"),
        ("p", "A written contract should state the number of colonies, the dates of delivery and "
              "removal, the fee and the minimum colony strength. Strength is normally measured "
              "as frames covered with bees; many almond contracts require an average of eight "
              "frames, and third-party inspectors open a sample of hives to check. The contract "
              "should also say who provides water, how the grower will warn the beekeeper before "
              "spraying, and how trucks and forklifts reach the drop sites."),
        ("h2", "Other crops"),
        ("ul", [
            "Apples and pears: usually around one colony per acre, placed when about 5 to 10 "
            "percent of the blossoms are open.",
            "Blueberries: honey bees are less efficient than bumble bees because they cannot "
            "perform buzz pollination, the vibration that shakes pollen from the flower, so "
            "growers compensate with more colonies.",
            "Cranberries: colonies are placed on the bogs in June and July.",
            "Cucumbers, melons and pumpkins: separate male and female flowers need many visits "
            "to set well-shaped fruit.",
        ]),
        ("h2", "Good practice"),
        ("p", "Move colonies at night, when the foragers are at home, and net or strap the loads. "
              "Place hives in sunny spots, in groups along the orchard edge or within the rows, "
              "so that foragers spread across the whole block. Insist that insecticides and "
              "fungicide tank mixes are not sprayed on open blooms while bees are flying, and "
              "remove the colonies promptly after petal fall, before the orchard is sprayed "
              "again."),
    ],
}

PROTECTIVE = {
    "title": "Protective Equipment and Using the Smoker",
    "blocks": [
        ("p", "Calm bees and well-chosen equipment make inspections safer and more pleasant. Even "
              "gentle colonies turn defensive in bad weather, during a nectar dearth or when the "
              "queen is lost, so always go to the hive dressed for the worst day rather than the "
              "best."),
        ("h2", "Veils"),
        ("p", "The veil is the single most important piece of protection, because stings to the "
              "face and eyes are the most painful and the most dangerous. Black mesh is easiest "
              "to see through. Fencing-style hooded veils zip onto a suit or jacket and hold the "
              "mesh away from the face, while round veils are worn over a brimmed hat."),
        ("h2", "Suits and jackets"),
        ("p", "Wear light colours such as white or khaki. Bees react strongly to dark, furry "
              "objects that resemble bears and skunks, their natural predators. Full suits offer "
              "the most protection; ventilated suits made from three layers of open mesh are "
              "much cooler in summer and hard for stingers to reach through. Close the gaps at "
              "the ankles with elastic cuffs or by tucking trousers into boots."),
        ("h2", "Gloves"),
        ("p", "Leather gloves, often goatskin with long canvas gauntlets, stop most stings but "
              "make it harder to feel the frames and avoid crushing bees. Many experienced "
              "beekeepers use disposable nitrile gloves instead: they give good dexterity, do not "
              "hold the smell of venom and can be changed between apiaries to limit the spread "
              "of diseases such as American foulbrood."),
        ("h2", "The smoker"),
        ("p", "A smoker is a metal fire chamber attached to a set of bellows. Good fuels burn "
              "slowly and give cool, white smoke: pine needles, untreated hessian (burlap), dry "
              "rotten wood, cotton rags, cardboard egg boxes and wood pellets. Light a little "
              "fuel at the bottom, pump until it burns well, then pack more on top. Hot smoke "
              "with flames singes bees and should be avoided."),
        ("p", "Smoke works in two ways. It masks the alarm pheromone, isopentyl acetate, which "
              "guard bees release and which smells like bananas, and it prompts many bees to "
              "fill up on honey, making them less inclined to sting. Give two or three gentle "
              "puffs at the entrance, wait about a minute, then lift the cover and puff lightly "
              "across the top bars. Use as little as needed; too much smoke sends the bees into "
              "a panic and can taint the honey."),
        ("h2", "Other tools"),
        ("p", "A hive tool prises apart boxes glued together with propolis. The J-hook hive tool "
              "has a hooked end that levers a frame up by its lug. A soft bee brush, a frame grip "
              "and a frame rest that hangs on the side of the box are also useful."),
        ("h2", "If you are stung"),
        ("p", "Scrape the stinger out at once with a fingernail or the hive tool, because the "
              "venom sac keeps pumping for up to a minute. Puff smoke over the spot to hide the "
              "alarm scent. Local swelling is normal, but hives, swelling of the throat or "
              "difficulty breathing after a sting are signs of anaphylaxis and need emergency "
              "medical help. If you know you are allergic, never work bees alone, and keep an "
              "epinephrine auto-injector within reach."),
    ],
}

WINTERING = {
    "title": "Wintering the Colony",
    "blocks": [
        ("p", "Honey bees do not hibernate. They survive the winter as a colony, clustering "
              "together and living on the honey and pollen stored during the summer. In cold "
              "climates winter losses of 20 to 40 percent are common, and most can be traced to "
              "starvation, damp, varroa damage or a failing queen."),
        ("h2", "The winter cluster"),
        ("p", "When the air temperature falls below about 14 degrees Celsius (57 F), the bees "
              "draw together into a tight ball over the combs. Bees on the outer mantle pack "
              "closely and act as insulation, while those in the core generate heat by "
              "shivering their flight muscles with the wings uncoupled. The mantle is kept above "
              "about 8 degrees Celsius, and once brood rearing resumes the core is held near 34 "
              "to 35 degrees Celsius. The cluster moves slowly upward through the stores during "
              "the winter and cannot cross empty comb in very cold weather."),
        ("h2", "Winter bees"),
        ("p", "The workers that carry the colony through winter are raised in late summer and "
              "autumn. These winter bees, sometimes called diutinus bees, have large fat bodies "
              "rich in the protein vitellogenin and can live four to six months, many times "
              "longer than a summer forager. Their health depends on good autumn pollen and low "
              "mite levels while they are being raised."),
        ("h2", "Food stores"),
        ("p", "In a climate with long, hard winters a colony needs about 27 to 41 kg (60 to 90 lb) "
              "of honey. Heft the hive from the back in autumn and again in late winter to judge "
              "how much remains. Emergency feed in midwinter must be solid, because cold bees "
              "cannot take down and evaporate liquid syrup:"),
        ("ul", [
            "fondant or baker's icing laid directly over the cluster;",
            "a candy board, a frame-sized slab of hard sugar candy under the inner cover;",
            "the mountain camp method, with dry granulated sugar spread on newspaper over the "
            "top bars.",
        ]),
        ("p", "Colonies sometimes die with honey only a few centimetres away. This isolation "
              "starvation happens when a long cold spell stops the cluster from moving sideways "
              "to reach stores at the edge of the box."),
        ("h2", "Moisture and ventilation"),
        ("p", "Moisture kills more colonies than cold. Every kilogram of honey the bees burn "
              "releases water vapour, which condenses on a cold crown board and drips back onto "
              "the cluster. A quilt box filled with wood shavings, an insulated top or a small "
              "upper entrance lets damp air escape while keeping the heat in. Tilting the hive "
              "slightly forward lets condensation run out of the entrance."),
        ("h2", "Protecting the hive"),
        ("ul", [
            "Fit a mouse guard with holes just under 10 mm wide, which bees can pass but mice cannot.",
            "Provide a windbreak of hedging, fencing or straw bales on the windward side.",
            "In very cold regions, wrap hives in black roofing felt or insulation board.",
            "Keep entrances clear of dead bees and snow.",
        ]),
        ("p", "On sunny days above about 10 degrees Celsius the bees leave the hive on cleansing "
              "flights, emptying their guts after weeks of holding their waste. Otherwise avoid "
              "opening the hive: listening with an ear or a stethoscope against the side of the "
              "box tells you the colony is alive."),
    ],
}

# Slide deck: list of (slide title, [bullets]).
QUEEN_REARING_TITLE = "Raising Your Own Queens"
QUEEN_REARING_SLIDES = [
    ("Raising Your Own Queens: Why Bother?", [
        "Replace failing or drone-laying queens quickly, without waiting for mail-order stock",
        "Select breeder queens for gentleness, productivity and mite tolerance",
        "Produce queens adapted to your local climate and forage",
        "Save money: one breeder colony can supply dozens of daughter queens",
        "Make nucleus colonies to sell or to replace winter losses",
    ]),
    ("Grafting: the Doolittle Method", [
        "Developed by the American beekeeper Gilbert M. Doolittle and published in 1889 in "
        "Scientific Queen-Rearing",
        "Transfer larvae less than 24 hours old from worker cells into wax or plastic queen cups",
        "Use a fine grafting tool, such as a Chinese grafting tool with a flexible tongue, with "
        "good light and magnification",
        "Work quickly in a warm, humid room so the larvae do not dry out",
        "Mount 15 to 30 cups on cell bars in a cell bar frame",
        "No-graft alternatives: Jenter and Nicot cupkit systems, where the queen lays directly "
        "into cups, and the Miller method",
    ]),
    ("Cell Builders and Timing", [
        "The cell builder must be strong, crowded with young nurse bees and rich in fresh pollen "
        "and nectar or syrup",
        "A queenless starter accepts grafts readily; a Cloake board lets one colony act as a "
        "queenless starter and then a queenright finisher",
        "Day 0: graft the larvae",
        "Day 5: the queen cells are capped",
        "Day 10: move the ripe queen cells into mating nucs, handling them gently",
        "Day 12: virgin queens emerge; in a cell builder the first to emerge kills her sisters",
    ]),
    ("Mating Nucs and Marking", [
        "Each mating nuc needs a cup or two of young bees, food and a ripe cell or a virgin queen",
        "Virgins fly to drone congregation areas 1 to 5 km away and mate with many drones over "
        "several days",
        "Look for eggs two to three weeks after the queen emerges",
        "Mark each mated queen on the thorax with a paint pen, using the international colour "
        "code for her year of birth:",
        "white for years ending 1 or 6, yellow 2 or 7, red 3 or 8, green 4 or 9, blue 5 or 0",
        "Mnemonic: Will You Raise Good Bees",
    ]),
]

# file name -> (format, content)
# A hive-inspection log: one row per inspection (a CSV table).
INSPECTION_LOG_HEADER = ["date", "hive", "frames of brood", "queen seen", "temper", "varroa per 100 bees", "notes"]
INSPECTION_LOG_ROWS = [
    ["2024-04-06", "Hive 1", "4", "yes", "calm", "0.5", "first inspection of the year; stores light, fed fondant"],
    ["2024-04-06", "Hive 2", "3", "no", "calm", "0.8", "eggs present so queen is laying; added a super"],
    ["2024-04-06", "Hive 3", "5", "yes", "nervous", "1.0", "drone brood appearing on the outer frames"],
    ["2024-04-20", "Hive 1", "6", "yes", "calm", "0.7", "brood pattern compact; added a second brood box"],
    ["2024-04-20", "Hive 2", "5", "yes", "calm", "0.9", "marked the queen with a blue dot"],
    ["2024-04-20", "Hive 3", "7", "no", "nervous", "1.2", "play cups along the bottom bars, none charged"],
    ["2024-05-04", "Hive 1", "8", "yes", "calm", "1.1", "strong nectar flow from the oilseed rape"],
    ["2024-05-04", "Hive 2", "6", "yes", "calm", "1.0", "drawn foundation in the super"],
    ["2024-05-04", "Hive 3", "8", "no", "defensive", "1.6", "three charged queen cells; made an artificial swarm"],
    ["2024-05-18", "Hive 1", "9", "yes", "calm", "1.3", "clipped the queen's wing before swarm season"],
    ["2024-05-18", "Hive 2", "7", "yes", "calm", "1.2", "second super added"],
    ["2024-05-18", "Hive 3", "4", "no", "calm", "0.9", "virgin queen seen running on the comb"],
    ["2024-06-01", "Hive 1", "9", "yes", "calm", "1.8", "removed two frames of capped drone brood"],
    ["2024-06-01", "Hive 2", "8", "yes", "nervous", "2.1", "chalkbrood mummies on the landing board"],
    ["2024-06-01", "Hive 3", "2", "no", "calm", "1.0", "no eggs yet; waiting for the new queen to mate"],
    ["2024-06-15", "Hive 1", "8", "yes", "calm", "2.4", "took off a full super of spring honey"],
    ["2024-06-15", "Hive 2", "8", "yes", "calm", "2.6", "requeened after chalkbrood spread to six frames"],
    ["2024-06-15", "Hive 3", "5", "yes", "calm", "1.1", "new queen laying well; marked her green"],
    ["2024-07-06", "Hive 1", "7", "yes", "calm", "3.2", "mite count rising; planned treatment after harvest"],
    ["2024-07-06", "Hive 2", "6", "yes", "calm", "2.0", "new queen accepted; brood on seven frames"],
    ["2024-07-06", "Hive 3", "7", "yes", "calm", "1.4", "heather supers put on for the moors"],
    ["2024-08-03", "Hive 1", "5", "yes", "defensive", "3.9", "harvested summer honey; robbing at the entrance"],
    ["2024-08-03", "Hive 2", "5", "yes", "calm", "2.2", "fitted an entrance reducer against wasps"],
    ["2024-08-03", "Hive 3", "6", "yes", "calm", "1.7", "moved to the heather on the moors"],
    ["2024-08-24", "Hive 1", "5", "yes", "calm", "4.5", "started a thymol treatment, four weeks, supers off"],
    ["2024-08-24", "Hive 2", "5", "yes", "calm", "2.5", "started a thymol treatment alongside Hive 1"],
    ["2024-08-24", "Hive 3", "5", "yes", "calm", "1.9", "brought home from the moors with two full heather supers"],
    ["2024-09-21", "Hive 1", "4", "yes", "calm", "0.6", "treatment finished; fed 10 litres of thick syrup"],
    ["2024-09-21", "Hive 2", "4", "yes", "calm", "0.5", "fed 8 litres of thick syrup; mouse guard fitted"],
    ["2024-09-21", "Hive 3", "5", "yes", "calm", "0.8", "heavy with heather honey; no feeding needed this autumn"],
]

# An e-mail from one club member to another about a swarm (RFC 5322, one attachment).
SWARM_EMAIL = {
    "subject": "Swarm caught at the allotments on Saturday",
    "from": "Margaret Hale <margaret.hale@example.org>",
    "to": "Tom Fletcher <tom.fletcher@example.org>",
    "cc": "Apiary club <club@example.org>",
    "date": "Sun, 12 May 2024 18:42:00 +0100",
    "body": [
        "Hi Tom,",
        "You asked how the swarm call went on Saturday, so here is the whole story for the club "
        "newsletter. The allotment society phoned me at about half past one: a swarm the size of a "
        "rugby ball was hanging from the lowest branch of the damson tree beside plot 14, roughly "
        "two metres up. By the time I arrived the cluster was quiet and the scouts were still "
        "dancing on its surface, which told me the bees had not yet chosen a new home.",
        "I laid a white sheet under the branch, propped an empty nucleus box on it with the "
        "entrance facing the cluster, and gave the branch one sharp shake. Most of the bees dropped "
        "straight into the box. Within a few minutes workers at the entrance were fanning with "
        "their abdomens raised, which is the surest sign that the queen is inside. I left the box "
        "in place until dusk so that the flying bees could join the others, then closed the "
        "entrance with foam and drove it home.",
        "On Sunday morning I hived the swarm onto six frames of foundation and one frame of drawn "
        "comb, with no brood, and I will feed a light syrup for a week so that they draw comb "
        "quickly. I weighed the box before and after, and the swarm came to 1.8 kilograms of bees, "
        "which is about fourteen thousand workers. I could not find the queen, so I will look for "
        "eggs in ten days rather than disturb them now.",
        "Nobody at the allotments was stung. Two children watched the whole thing from behind the "
        "shed and asked very good questions about why the bees were so calm; a swarm has gorged on "
        "honey before leaving and has no brood or stores to defend.",
        "I have attached my checklist for swarm collection in case the club wants to print it.",
        "Best wishes,",
        "Margaret",
    ],
    "attachment": ("swarm-collection-checklist.txt",
                   "SWARM COLLECTION CHECKLIST\n\n"
                   "* Veil, gloves and a lit smoker, although a swarm rarely needs smoke.\n"
                   "* A nucleus box or a cardboard box with a lid, and a white sheet.\n"
                   "* Secateurs and a soft brush for bees on awkward branches.\n"
                   "* Foam or mesh to close the entrance for the journey.\n"
                   "* The finder's phone number and permission to enter the land.\n"),
}

DOCUMENTS = {
    "hive-anatomy.md": ("md", HIVE_ANATOMY),
    "colony-roles.html": ("html", COLONY_ROLES),
    "seasonal-calendar.txt": ("txt", SEASONAL_CALENDAR),
    "varroa-mites.pdf": ("pdf", VARROA),
    "honey-harvest.docx": ("docx", HONEY_HARVEST),
    "swarming.md": ("md", SWARMING),
    "queen-rearing.pptx": ("pptx", None),
    "pollination-services.pdf": ("pdf", POLLINATION),
    "protective-equipment.txt": ("txt", PROTECTIVE),
    "wintering.html": ("html", WINTERING),
    "inspection-log.csv": ("csv", None),
    "swarm-call.eml": ("eml", SWARM_EMAIL),
}


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------

def write_markdown(path: Path, doc: dict) -> None:
    lines = [f"# {doc['title']}", ""]
    for block in doc["blocks"]:
        kind = block[0]
        if kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def write_txt(path: Path, doc: dict) -> None:
    # Plain layout (no setext underlines): unstructured's text partitioner merges
    # "=====" lines into the heading and emits "-----" lines as stray elements.
    lines = [doc["title"].upper(), ""]
    for block in doc["blocks"]:
        kind = block[0]
        if kind == "h2":
            lines += [block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"* {item}" for item in block[1]] + [""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def write_html(path: Path, doc: dict) -> None:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(doc['title'])}</title>",
        f'<meta name="author" content="{e(AUTHOR)}">',
        "</head>",
        "<body>",
        "<article>",
        f"<h1>{e(doc['title'])}</h1>",
    ]
    for block in doc["blocks"]:
        kind = block[0]
        if kind == "h2":
            out.append(f"<h2>{e(block[1])}</h2>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>")
            out += [f"  <li>{e(item)}</li>" for item in block[1]]
            out.append("</ul>")
    out += ["</article>", "</body>", "</html>"]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def write_pdf(path: Path, doc: dict) -> None:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(doc["title"])
    pdf.set_author(AUTHOR)
    pdf.set_subject("Beekeeping")
    pdf.set_creator("scripts/make_sample_corpus.py")
    pdf.set_lang("en")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()

    def line(text: str, h: float, indent: float = 0.0) -> None:
        pdf.set_x(pdf.l_margin + indent)
        pdf.multi_cell(pdf.epw - indent, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.set_font("Helvetica", "B", 18)
    line(doc["title"], 9)
    pdf.ln(4)
    for block in doc["blocks"]:
        kind = block[0]
        if kind == "pagebreak":
            pdf.add_page()
        elif kind == "h2":
            pdf.ln(2)
            pdf.set_font("Helvetica", "B", 13)
            line(block[1], 7)
            pdf.ln(1)
        elif kind == "p":
            pdf.set_font("Helvetica", "", 11)
            line(block[1], 5.5)
            pdf.ln(2)
        elif kind == "ul":
            pdf.set_font("Helvetica", "", 11)
            for item in block[1]:
                line(f"- {item}", 5.5, indent=5)
                pdf.ln(1)
            pdf.ln(1)
    pdf.output(str(path))


def _set_core_properties(props, title: str) -> None:
    props.title = title
    props.author = AUTHOR
    props.subject = "Beekeeping"
    props.keywords = "beekeeping, sample corpus"
    props.last_modified_by = AUTHOR
    props.revision = 1
    naive = FIXED_DATE.replace(tzinfo=None)
    props.created = naive
    props.modified = naive
    props.last_printed = naive


def _normalize_zip(data: bytes) -> bytes:
    """Rewrite an OOXML zip with fixed entry timestamps so output is byte-stable."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return buf.getvalue()


def write_docx(path: Path, doc: dict) -> None:
    import docx

    d = docx.Document()
    _set_core_properties(d.core_properties, doc["title"])
    d.add_heading(doc["title"], level=1)
    for block in doc["blocks"]:
        kind = block[0]
        if kind == "h2":
            d.add_heading(block[1], level=2)
        elif kind == "p":
            d.add_paragraph(block[1])
        elif kind == "ul":
            for item in block[1]:
                d.add_paragraph(item, style="List Bullet")
    buf = io.BytesIO()
    d.save(buf)
    path.write_bytes(_normalize_zip(buf.getvalue()))


def write_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.enum.text import MSO_AUTO_SIZE
    from pptx.util import Pt

    prs = Presentation()
    _set_core_properties(prs.core_properties, QUEEN_REARING_TITLE)
    layout = prs.slide_layouts[1]  # "Title and Content"
    for title, bullets in QUEEN_REARING_SLIDES:
        slide = prs.slides.add_slide(layout)
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for bullet in bullets[1:]:
            body.add_paragraph().text = bullet
        body.word_wrap = True
        body.auto_size = MSO_AUTO_SIZE.TEXT_TO_FIT_SHAPE
        for para in body.paragraphs:
            for run in para.runs:
                run.font.size = Pt(14)
    buf = io.BytesIO()
    prs.save(buf)
    path.write_bytes(_normalize_zip(buf.getvalue()))


def write_csv(path: Path) -> None:
    import csv

    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(INSPECTION_LOG_HEADER)
    writer.writerows(INSPECTION_LOG_ROWS)
    path.write_bytes(buf.getvalue().encode("utf-8"))


def write_eml(path: Path, doc: dict) -> None:
    from email.message import EmailMessage
    from email.policy import SMTP

    m = EmailMessage()
    for key in ("subject", "from", "to", "cc", "date"):
        m[key.capitalize()] = doc[key]
    m["Message-ID"] = "<swarm-call-2024-05-12@example.org>"
    m.set_content("\n\n".join(doc["body"]) + "\n", cte="7bit")
    name, text = doc["attachment"]
    m.add_attachment(text.encode("utf-8"), maintype="text", subtype="plain", filename=name)
    m.set_boundary("ragline-sample-boundary")  # fixed, so the bytes are reproducible
    path.write_bytes(m.as_bytes(policy=SMTP))


def _email_text(path: Path) -> str:
    from email import policy
    from email.parser import BytesParser

    msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    parts = [msg.get_body(preferencelist=("plain",)).get_content()]
    parts += [a.get_content() for a in msg.iter_attachments()]
    return "\n".join(parts)


def generate(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (fmt, doc) in DOCUMENTS.items():
        path = out_dir / name
        if fmt == "md":
            write_markdown(path, doc)
        elif fmt == "txt":
            write_txt(path, doc)
        elif fmt == "html":
            write_html(path, doc)
        elif fmt == "pdf":
            write_pdf(path, doc)
        elif fmt == "docx":
            write_docx(path, doc)
        elif fmt == "pptx":
            write_pptx(path)
        elif fmt == "csv":
            write_csv(path)
        elif fmt == "eml":
            write_eml(path, doc)
        else:  # pragma: no cover
            raise ValueError(fmt)
        written.append(path)
    return written


# ---------------------------------------------------------------------------
# Text extraction and checks
# ---------------------------------------------------------------------------

class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "title", "head"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "title", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def extract_texts(path: Path) -> dict[str, str]:
    """Return {extractor name: text}; PDFs are extracted with both pypdf and pdfminer."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pdfminer.high_level import extract_text as pdfminer_extract
        from pypdf import PdfReader

        reader = PdfReader(str(path))
        return {
            "pypdf": "\n".join(page.extract_text() or "" for page in reader.pages),
            "pdfminer": pdfminer_extract(str(path)),
        }
    if suffix == ".docx":
        import docx

        d = docx.Document(str(path))
        return {"python-docx": "\n".join(p.text for p in d.paragraphs)}
    if suffix == ".pptx":
        from pptx import Presentation

        prs = Presentation(str(path))
        parts = []
        for slide in prs.slides:
            for shape in slide.shapes:
                if shape.has_text_frame:
                    parts.append(shape.text_frame.text)
        return {"python-pptx": "\n".join(parts)}
    if suffix in (".html", ".htm"):
        parser = _HTMLText()
        parser.feed(path.read_text(encoding="utf-8"))
        return {"html": "\n".join(parser.parts)}
    if suffix == ".eml":
        return {"email": _email_text(path)}
    return {"text": path.read_text(encoding="utf-8")}


def format_checks(path: Path) -> list[str]:
    """Structural checks specific to each format; returns a list of problems."""
    problems = []
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader

        reader = PdfReader(str(path))
        if path.name == "varroa-mites.pdf" and len(reader.pages) != 2:
            problems.append(f"{path.name}: expected 2 pages, got {len(reader.pages)}")
        meta = reader.metadata or {}
        if not meta.get("/Title"):
            problems.append(f"{path.name}: missing /Title metadata")
    elif suffix == ".docx":
        import docx

        styles = {p.style.name for p in docx.Document(str(path)).paragraphs}
        for needed in ("Heading 1", "Heading 2"):
            if needed not in styles:
                problems.append(f"{path.name}: no paragraph with style {needed!r}")
    elif suffix == ".pptx":
        from pptx import Presentation

        slides = list(Presentation(str(path)).slides)
        if not 3 <= len(slides) <= 4:
            problems.append(f"{path.name}: expected 3-4 slides, got {len(slides)}")
        for i, slide in enumerate(slides, 1):
            if slide.shapes.title is None or not slide.shapes.title.text.strip():
                problems.append(f"{path.name}: slide {i} has no title")
    elif suffix == ".html":
        src = path.read_text(encoding="utf-8")
        for tag in ("<h1>", "<h2>", "<p>", "<ul>", "<li>"):
            if tag not in src:
                problems.append(f"{path.name}: no {tag} element")
    elif suffix == ".md":
        src = path.read_text(encoding="utf-8")
        if not re.search(r"^# ", src, re.M) or not re.search(r"^## ", src, re.M):
            problems.append(f"{path.name}: missing # / ## headings")
        if not re.search(r"^- ", src, re.M):
            problems.append(f"{path.name}: no list items")
    elif suffix == ".csv":
        import csv

        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        if not rows or rows[0] != INSPECTION_LOG_HEADER:
            problems.append(f"{path.name}: header row is not {INSPECTION_LOG_HEADER}")
        ragged = [i for i, r in enumerate(rows, 1) if len(r) != len(INSPECTION_LOG_HEADER)]
        if ragged:
            problems.append(f"{path.name}: rows {ragged} do not have {len(INSPECTION_LOG_HEADER)} cells")
    elif suffix == ".eml":
        from email import policy
        from email.parser import BytesParser

        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        for header in ("Subject", "From", "To", "Date"):
            if not msg.get(header):
                problems.append(f"{path.name}: no {header} header")
        if len(list(msg.iter_attachments())) != 1:
            problems.append(f"{path.name}: expected one attachment")
    return problems


def load_questions(path: Path = QUESTIONS_PATH) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check(sample_dir: Path = SAMPLE_DIR, questions_path: Path = QUESTIONS_PATH) -> list[str]:
    problems: list[str] = []

    # 1. Files on disk match what the script would generate now.
    on_disk = sorted(p.name for p in sample_dir.iterdir() if p.is_file())
    if on_disk != sorted(DOCUMENTS):
        problems.append(f"unexpected file set in {sample_dir}: {on_disk}")
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in generate(Path(tmp)):
            existing = sample_dir / fresh.name
            if not existing.exists():
                problems.append(f"{fresh.name}: missing (run the script)")
            elif existing.read_bytes() != fresh.read_bytes():
                problems.append(f"{fresh.name}: differs from freshly generated output "
                                "(re-run scripts/make_sample_corpus.py)")

    # 2. Every file opens, has the right structure and a sensible length.
    texts: dict[str, dict[str, str]] = {}
    for name in DOCUMENTS:
        path = sample_dir / name
        if not path.exists():
            continue
        try:
            texts[name] = {k: normalize(v) for k, v in extract_texts(path).items()}
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: failed to open/extract: {exc!r}")
            continue
        problems += format_checks(path)
        for extractor, text in texts[name].items():
            words = len(text.split())
            if not MIN_WORDS <= words <= MAX_WORDS:
                problems.append(f"{name} [{extractor}]: {words} words, "
                                f"expected {MIN_WORDS}-{MAX_WORDS}")

    # 3. Questions: each answer is in its own document, and in no other.
    questions = load_questions(questions_path)
    if not 12 <= len(questions) <= 17:
        problems.append(f"{questions_path.name}: {len(questions)} questions, expected 12-17")
    covered = set()
    for i, q in enumerate(questions, 1):
        if set(q) != {"question", "doc", "answer"}:
            problems.append(f"question {i}: keys {sorted(q)}")
            continue
        doc, answer = q["doc"], normalize(q["answer"])
        covered.add(doc)
        if doc not in texts:
            problems.append(f"question {i}: unknown or unreadable doc {doc!r}")
            continue
        for extractor, text in texts[doc].items():
            if answer not in text:
                problems.append(f"question {i}: answer {answer!r} not found in {doc} [{extractor}]")
        others = [n for n, t in texts.items()
                  if n != doc and any(answer.lower() in v.lower() for v in t.values())]
        if others:
            problems.append(f"question {i}: answer {answer!r} also appears in {others}")
    missing = sorted(set(DOCUMENTS) - covered)
    if missing:
        problems.append(f"documents without a question: {missing}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify data/sample and data/sample-questions.jsonl instead of writing")
    args = ap.parse_args(argv)

    if not args.check:
        for path in generate(SAMPLE_DIR):
            print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size} bytes)")
        return 0

    problems = check()
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print(f"OK: {len(DOCUMENTS)} documents and {len(load_questions())} questions verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
